"""The command line loads only what its action needs (start-up cost is paid on every boot,
and under emulation in the lab it is seconds)."""

from __future__ import annotations

import subprocess
import sys

from lvs_scripts import cli, config, locks


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "print(' '.join(m for m in sys.modules if m.startswith(('lvs_scripts',"
                          " 'plumbum'))))"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_imports_neither_the_library_nor_plumbum() -> None:
    loaded = loaded_after("import lvs_scripts.cli")
    assert loaded == {"lvs_scripts", "lvs_scripts.cli", "lvs_scripts.errors",
                      "lvs_scripts.render"}


def test_cli_defaults_equal_the_library_defaults() -> None:
    assert cli.DEFAULT_CONFIG == config.DEFAULT_CONFIG
    assert (cli.DEFAULT_STATE_DIR, cli.DEFAULT_LOCK_DIR) == (locks.DEFAULT_STATE_DIR,
                                                             locks.DEFAULT_LOCK_DIR)
