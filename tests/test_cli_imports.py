"""The command line loads only what its action needs (start-up cost is paid on every boot,
and under emulation in the lab it is seconds)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lvs_scripts import cli, config, locks
from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SEED = EXAMPLES / "seed-dr.toml"

# What `status` and `start --dry-run` of a plain DR config (no [ha], [bgp], checks, fwmark)
# have no use for: ours, and the standard library's that only these or plumbum's unused
# parts would import (urllib.request: http.client, email, ssl).
NOT_FOR_PLAIN_DR = frozenset({
    "lvs_scripts.bgp", "lvs_scripts.ha", "lvs_scripts.checks", "lvs_scripts.watch",
    "lvs_scripts.metrics", "lvs_scripts.admin", "aiohttp", "asyncio", "prometheus_client",
    "urllib.request", "http.client", "email", "ssl", "logging.handlers", "hashlib",
    "pathlib", "lvs_scripts.config_cache",
})


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "print(' '.join(m for m in sys.modules if m.startswith(('lvs_scripts',"
                          " 'plumbum'))))"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def imported_by(host: FakeHost, files: Path, *args: str, env: dict[str, str] | None = None
                ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run bin/lvs-director against the fake host under `python -S -X importtime`: every
    module the process imported, read from stderr. -S: no site, so that no .pth file of
    the venv imports anything on the CLI's behalf (an editable install's finder imports
    pathlib); plumbum's directory goes on PYTHONPATH instead."""
    spec = importlib.util.find_spec("plumbum")
    assert spec is not None and spec.origin is not None
    site = os.path.dirname(os.path.dirname(spec.origin))
    ran = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", str(ROOT / "bin" / "lvs-director"), *args],
        env={**host.env, "LVS_STATE_DIR": str(files / "run"),
             "LVS_LOCK_DIR": str(files / "lock"), "LVS_SYSLOG": "0",
             "PYTHONPATH": os.pathsep.join((str(ROOT), site)), **(env or {})},
        capture_output=True, text=True, timeout=120, check=False)
    lines = ran.stderr.splitlines()
    timed = [line for line in lines if line.startswith("import time:")]
    assert timed, ran.stderr  # -X importtime printed: otherwise nothing below means anything
    modules = {line.rsplit("|", 1)[1].strip() for line in timed[1:]}  # [0]: the header
    ran.stderr = "\n".join(line for line in lines if not line.startswith("import time:"))
    return ran, modules


def test_help_imports_neither_the_library_nor_plumbum() -> None:
    loaded = loaded_after("import lvs_scripts.cli")
    assert loaded == {"lvs_scripts", "lvs_scripts.cli", "lvs_scripts.errors",
                      "lvs_scripts.render"}


@pytest.mark.parametrize(("args", "code"), [(("status",), 3), (("--dry-run", "start"), 0)])
def test_a_plain_dr_config_loads_no_optional_part(fakehost: FakeHost, tmp_path: Path,
                                                  args: tuple[str, ...], code: int) -> None:
    ran, modules = imported_by(fakehost, tmp_path, "-c", str(SEED), *args)
    assert ran.returncode == code, ran.stderr
    # It did observe the host: through the runner, which imports plumbum.
    assert {"lvs_scripts.director", "lvs_scripts.runner", "plumbum"} <= modules
    assert fakehost.argvs("ipvsadm")
    assert not modules & NOT_FOR_PLAIN_DR, sorted(modules & NOT_FOR_PLAIN_DR)


@pytest.mark.parametrize(("config", "env", "needed"), [
    (EXAMPLES / "lab-ha.toml", {"LVS_HOST": "lb1"}, "lvs_scripts.ha"),
    (EXAMPLES / "lab-bgp.toml", {}, "lvs_scripts.bgp"),
    (None, {}, "lvs_scripts.checks"),
], ids=["ha", "bgp", "check"])
def test_a_config_with_an_optional_part_loads_it(fakehost: FakeHost, tmp_path: Path,
                                                 config: Path | None, env: dict[str, str],
                                                 needed: str) -> None:
    if config is None:
        config = tmp_path / "checked.toml"
        config.write_text(SEED.read_text() + '\n[service.check]\ntype = "tcp"\n')
    ran, modules = imported_by(fakehost, tmp_path, "-c", str(config), "--dry-run", "start",
                               env=env)
    assert ran.returncode == 0, ran.stderr
    assert needed in modules


# Patterns our modules compile as they are imported: the ones nearly every run uses (the
# ipvsadm listings, routes). The rest are compiled by re on first use.
COMPILED_AT_IMPORT = """
import re, re._compiler, sys
compile_ = re._compiler.compile
def counted(pattern, flags=0):
    caller = sys._getframe(1)
    while caller.f_globals["__name__"].startswith("re"):
        caller = caller.f_back
    if caller.f_globals["__name__"].startswith("lvs_scripts"):
        print(caller.f_globals["__name__"], pattern)
    return compile_(pattern, flags)
re._compiler.compile = counted
import lvs_scripts.cli, lvs_scripts.config, lvs_scripts.director, lvs_scripts.apply
"""


def test_few_patterns_are_compiled_at_import() -> None:
    out = subprocess.run([sys.executable, "-c", COMPILED_AT_IMPORT], capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT)})
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["lvs_scripts.probes"] * 3


def test_cli_defaults_equal_the_library_defaults() -> None:
    assert cli.DEFAULT_CONFIG == config.DEFAULT_CONFIG
    assert (cli.DEFAULT_STATE_DIR, cli.DEFAULT_LOCK_DIR) == (locks.DEFAULT_STATE_DIR,
                                                             locks.DEFAULT_LOCK_DIR)
