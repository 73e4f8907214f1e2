"""kernel.py: does the running kernel have the scheduler and engine modules the config
names? Read from a made-up /sys and /lib/modules: loaded, loadable, built in, absent, and
"cannot tell" where those files say nothing of IPVS."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvs_scripts.config import parse_config
from lvs_scripts.errors import KernelLacks
from lvs_scripts.kernel import module_state, require_modules, wanted_modules

RELEASE = "6.1.0-50-amd64"
DEP = """\
kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko
kernel/net/netfilter/ipvs/ip_vs_rr.ko: kernel/net/netfilter/ipvs/ip_vs.ko
kernel/net/netfilter/ipvs/ip_vs_sh.ko.xz: kernel/net/netfilter/ipvs/ip_vs.ko
"""
CONFIG = """
[director]
interface = "eth0"
[[service]]
vip = "192.168.30.254"
port = 5060
protocol = "udp"
scheduler = "{scheduler}"
persistence = 60
persistence_engine = "sip"
real = [ {{ address = "192.168.30.111" }} ]
"""


def root(tmp_path: Path, dep: str | None = DEP, builtin: str = "",
         loaded: tuple[str, ...] = ()) -> Path:
    if dep is not None:
        folder = tmp_path / "lib" / "modules" / RELEASE
        folder.mkdir(parents=True)
        (folder / "modules.dep").write_text(dep)
        (folder / "modules.builtin").write_text(builtin)
    for name in loaded:
        (tmp_path / "sys" / "module" / name).mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize(("name", "dep", "builtin", "loaded", "expected"), [
    ("ip_vs_rr", DEP, "", (), True),
    ("ip_vs_sh", DEP, "", (), True),  # compressed modules
    ("ip_vs_mh", DEP, "", (), False),
    ("ip_vs_mh", DEP, "kernel/net/netfilter/ipvs/ip_vs_mh.ko\n", (), True),
    ("ip_vs_twos", DEP, "", ("ip_vs_twos",), True),  # loaded (from elsewhere)
    ("ip_vs_mh", None, "", (), None),  # no /lib/modules/RELEASE: a container
    ("ip_vs_mh", "kernel/fs/9p/9p.ko:\n", "", (), None),  # a kernel without IPVS modules
])
def test_module_state(tmp_path: Path, name: str, dep: str | None, builtin: str,
                      loaded: tuple[str, ...], expected: bool | None) -> None:
    assert module_state(name, root(tmp_path, dep, builtin, loaded), RELEASE) is expected


def test_schedulers_and_engines_wanted_with_the_key_that_needs_them() -> None:
    config = parse_config(CONFIG.format(scheduler="mh"), "/etc/lvs/lvs.toml")
    assert wanted_modules(config) == {"ip_vs_mh": "service[0].scheduler",
                                      "ip_vs_pe_sip": "service[0].persistence_engine"}


def test_a_module_the_kernel_lacks_is_exit_5_naming_file_key_and_value(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(scheduler="mh"), "/etc/lvs/lvs.toml")
    with pytest.raises(KernelLacks) as caught:
        require_modules(config, root(tmp_path, loaded=("ip_vs_pe_sip",)), RELEASE)
    assert caught.value.exit_code == 5
    assert str(caught.value).startswith(
        "/etc/lvs/lvs.toml: service[0].scheduler = 'mh' needs the kernel module ip_vs_mh")


def test_the_sip_engine_module_missing_is_refused_too(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(scheduler="rr"), "f")
    with pytest.raises(KernelLacks, match=r"persistence_engine = 'sip' .* ip_vs_pe_sip"):
        require_modules(config, root(tmp_path), RELEASE)


def test_everything_there_or_unknowable_passes(tmp_path: Path) -> None:
    config = parse_config(CONFIG.format(scheduler="rr"), "f")
    require_modules(config, root(tmp_path, loaded=("ip_vs_pe_sip",)), RELEASE)
    require_modules(config, root(tmp_path / "container", dep=None), RELEASE)
