"""The Debian package built by `make deb`: lintian, its contents, its maintainer scripts
and its man pages. `make package-test` builds it and runs this file with LVS_DEB set (CI
runs it through `make test`); without LVS_DEB every test here is skipped.

Installed, started and purged on a real kernel: tests/e2e/test_lab_deb.py (lab VM)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lvs_scripts import manpage

ROOT = Path(__file__).resolve().parent.parent
DEB = os.environ.get("LVS_DEB", "")
pytestmark = pytest.mark.skipif(not DEB, reason="no package: run `make package-test`")

PROGRAMS = ("lvs-director", "lvs-realserver")
EXPECTED_FILES = {
    "./usr/sbin/lvs-director", "./usr/sbin/lvs-realserver",
    "./usr/lib/python3/dist-packages/lvs_scripts/cli.py",
    "./etc/init.d/lvs-director", "./etc/init.d/lvs-realserver", "./etc/init.d/lvs-director-watch",
    "./lib/systemd/system/lvs-director.service", "./lib/systemd/system/lvs-realserver.service",
    "./lib/systemd/system/lvs-director-watch.service",
    "./etc/default/lvs-director", "./etc/default/lvs-realserver",
    "./etc/lvs/lvs.toml",
    "./usr/share/doc/lvs-scripts/examples/seed-dr.toml",
    "./usr/share/man/man8/lvs-director.8.gz", "./usr/share/man/man8/lvs-realserver.8.gz",
    "./usr/share/man/man5/lvs.toml.5.gz",
    "./usr/share/bash-completion/completions/lvs-director",
    "./usr/share/bash-completion/completions/lvs-realserver",
}


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("deb")
    subprocess.run(["dpkg-deb", "-R", DEB, str(tree)], check=True)
    return tree


def field(name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", DEB, name], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_lintian_has_no_errors_and_no_warnings() -> None:
    """Tags at info level and below are allowed; README "The Debian package" lists them."""
    if shutil.which("lintian") is None:
        pytest.fail("lintian is not installed (make deb-deps)")
    done = subprocess.run(["lintian", "--allow-root", "--fail-on", "error,warning",
                           "--display-level", ">=warning", DEB],
                          capture_output=True, text=True, check=False, timeout=600)
    tags = [line for line in done.stdout.splitlines() if re.match(r"[EW]: ", line)]
    assert (done.returncode, tags) == (0, []), done.stdout + done.stderr


def test_contents() -> None:
    listing = subprocess.run(["dpkg-deb", "-c", DEB], capture_output=True, text=True,
                             check=True).stdout
    names = {line.split()[5] for line in listing.splitlines()}
    assert EXPECTED_FILES <= names, sorted(EXPECTED_FILES - names)
    assert not any(name.startswith("./usr/bin/") for name in names)
    assert not any("/tests/" in name or "__pycache__" in name for name in names)


def test_dependencies() -> None:
    depends = [d.strip() for d in field("Depends").split(",")]
    for needed in ("python3-plumbum", "python3-aiohttp", "python3-prometheus-client", "ipvsadm",
                   "iproute2", "procps", "iputils-arping | arping"):
        assert needed in depends, depends
    assert field("Architecture") == "all"
    assert field("Version") == manpage.version(ROOT)


def test_conffiles(unpacked: Path) -> None:
    conffiles = set((unpacked / "DEBIAN" / "conffiles").read_text().split())
    assert {"/etc/lvs/lvs.toml", "/etc/init.d/lvs-director", "/etc/init.d/lvs-realserver",
            "/etc/init.d/lvs-director-watch",
            "/etc/default/lvs-director", "/etc/default/lvs-realserver"} <= conffiles


def test_the_shipped_config_does_nothing(unpacked: Path) -> None:
    template = (unpacked / "etc" / "lvs" / "lvs.toml").read_text()
    assert all(not line.strip() or line.lstrip().startswith("#")
               for line in template.splitlines())


def test_units_name_the_package_s_programs(unpacked: Path) -> None:
    for name in PROGRAMS:
        unit = (unpacked / "lib" / "systemd" / "system" / f"{name}.service").read_text()
        for key, action in (("ExecStart", "start"), ("ExecReload", "reload"),
                            ("ExecStop", "stop")):
            assert f"\n{key}=/usr/sbin/{name} {action}\n" in unit
        documentation = re.search(r"^Documentation=(.*)$", unit, re.MULTILINE)
        assert documentation is not None
        for uri in documentation.group(1).split():
            page, section = re.fullmatch(r"man:([\w.-]+)\((\d)\)", uri).groups()  # type: ignore[union-attr]
            assert (unpacked / "usr/share/man" / f"man{section}" / f"{page}.{section}.gz"
                    ).exists(), uri


def test_the_watcher_s_unit_names_the_package_s_program(unpacked: Path) -> None:
    unit = (unpacked / "lib/systemd/system/lvs-director-watch.service").read_text()
    assert "\nExecStart=/usr/sbin/lvs-director watch\n" in unit
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit


SERVICES = (*PROGRAMS, "lvs-director-watch")


def test_installing_starts_and_enables_nothing(unpacked: Path) -> None:
    postinst = (unpacked / "DEBIAN" / "postinst").read_text()
    assert "deb-systemd-invoke" not in postinst and "invoke-rc.d" not in postinst
    for name in SERVICES:
        assert f"update-rc.d {name} defaults-disabled" in postinst
    # enable only inside "if ... was-enabled": kept enabled across upgrades if the
    # administrator enabled it, never enabled otherwise.
    lines = postinst.splitlines()
    enables = [i for i, line in enumerate(lines) if "deb-systemd-helper enable" in line]
    assert len(enables) == len(SERVICES)
    for index in enables:
        assert "was-enabled" in lines[index - 2], lines[index - 2:index + 1]


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
@pytest.mark.parametrize("page", ["man8/lvs-director.8.gz", "man8/lvs-realserver.8.gz",
                                  "man5/lvs.toml.5.gz"])
def test_man_pages_render_without_warnings(unpacked: Path, page: str) -> None:
    shown = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l",
                            str(unpacked / "usr/share/man" / page)],
                           capture_output=True, text=True, check=False, timeout=60,
                           env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "MANWIDTH": "80"})
    assert (shown.returncode, shown.stderr) == (0, "")
    assert "SEE ALSO" in shown.stdout
