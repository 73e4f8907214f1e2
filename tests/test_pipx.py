"""The README's pip path on Debian 12, word for word: `pipx install .` with PIPX_BIN_DIR
(/usr/local/sbin in the README; a temporary directory here), then the init.d script finds
the program on PATH and runs it. Needs pipx and PyPI (plumbum): `make package-test` runs it
with LVS_PIPX_TEST=1; skipped otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.environ.get("LVS_PIPX_TEST") != "1",
                                reason="needs pipx and PyPI: run `make package-test`")


def test_pipx_install_then_init_d_finds_the_program(fakehost: FakeHost, tmp_path: Path) -> None:
    assert shutil.which("pipx", path="/usr/bin"), "apt-get install pipx"
    bin_dir = tmp_path / "sbin"
    # Debian's pipx with Debian's python3, as a person on Debian 12 would run it.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
           "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(bin_dir)}
    installed = subprocess.run(["pipx", "install", str(ROOT)], env=env, capture_output=True,
                               text=True, check=False, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert {p.name for p in bin_dir.iterdir()} == {"lvs-director", "lvs-realserver"}
    # pipx's directory first: the fake PATH also has the venv's (editable) lvs-director.
    path = f"{bin_dir}:{fakehost.env['PATH']}"
    found = subprocess.run(["sh", "-c", "command -v lvs-director"], env={"PATH": path},
                           capture_output=True, text=True, check=True)
    assert found.stdout == f"{bin_dir}/lvs-director\n"
    status = subprocess.run(
        [str(ROOT / "init.d" / "lvs-director"), "status"], capture_output=True, text=True,
        check=False, timeout=120,
        env={**fakehost.env, "PATH": path,
             "LVS_CONFIG": str(ROOT / "examples" / "seed-dr.toml"), "LVS_SYSLOG": "0",
             "LVS_STATE_DIR": str(tmp_path / "run"), "LVS_LOCK_DIR": str(tmp_path / "lock")})
    assert (status.returncode, status.stdout.splitlines()[:1]) == (
        3, ["lvs-director: not running"]), status.stderr
    assert ["ipvsadm", "-S", "-n"] in fakehost.argvs()
