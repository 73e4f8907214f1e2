"""Valid configs load to the expected model; the file-level errors (missing, too big, not
UTF-8) name the file and exit 6. The invalid-config corpus is in test_config_corpus.py."""

from __future__ import annotations

import os
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import pytest

from lvs_scripts.cli import director_main, realserver_main
from lvs_scripts.config import IFNAMSIZ, MAX_CONFIG_BYTES, load_config, parse_config
from lvs_scripts.errors import ConfigError
from lvs_scripts.model import (
    SCHEDULERS,
    Config,
    Destination,
    DirectorConfig,
    Forwarding,
    Protocol,
    RealServerConfig,
    ServiceKey,
    Timeouts,
    VirtualService,
)
from lvs_scripts.tunnel import Tunnel

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed-dr.toml"

MINIMAL = """\
[director]
interface = "eth0"

[[service]]
vip = "10.0.0.10"
port = 80
real = [{ address = "10.0.0.21" }]
"""


def write(tmp_path: Path, text: str, name: str = "lvs.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def no_programs(mocker: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("LVS_SYSLOG", "0")
    monkeypatch.setenv("LVS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LVS_LOCK_DIR", str(tmp_path / "lock"))
    monkeypatch.delenv("LVS_CONFIG", raising=False)

    def fail(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"a program was started: {args[1:]!r}")

    return mocker.patch("lvs_scripts.runner.PlumbumRunner.run", autospec=True, side_effect=fail)


# --- the seed example ----------------------------------------------------------------------
def test_seed_example_loads_to_the_expected_model() -> None:
    config = load_config(str(SEED))
    vip = IPv4Address("192.168.30.254")
    expected = Config(
        path=str(SEED),
        director=DirectorConfig(
            interface="eth0",
            gateway=IPv4Address("192.168.30.1"),
            dip=IPv4Interface("192.168.30.105/24"),
            dip_interface="eth1",
            timeouts=Timeouts(tcp=30, tcpfin=5, udp=60),
            arping_count=5,
        ),
        realserver=RealServerConfig(arp_interfaces=("eth0",)),
        services=(
            VirtualService(
                key=ServiceKey(protocol=Protocol.TCP, address=vip, port=80),
                scheduler="wrr",
                persistence=0,
                netmask=None,
                extra=(),
                destinations=tuple(
                    Destination(address=IPv4Address(f"192.168.30.{host}"), port=80,
                                forwarding=Forwarding.DR, weight=weight)
                    for host, weight in ((111, 1), (112, 1), (113, 2), (114, 2))),
                drain_seconds=30,
            ),
        ),
    )
    assert config == expected
    # drain_seconds is compare=False on VirtualService: check it on its own.
    assert config.services[0].drain_seconds == 30
    assert config.services[0].key.ipv6 is False
    assert config.director_vips() == (vip,)
    assert config.realserver_vips() == (vip,)
    assert config.services[0].service_args() == ("-t", "192.168.30.254:80", "-s", "wrr")
    assert config.services[0].destination_args(config.services[0].destinations[2]) == (
        "-t", "192.168.30.254:80", "-r", "192.168.30.113:80", "-g", "-w", "2")


def test_seed_example_parses_the_same_from_text() -> None:
    text = SEED.read_text(encoding="utf-8")
    assert parse_config(text, str(SEED)) == load_config(str(SEED))
    assert parse_config(text).path == "<string>"


# --- defaults ------------------------------------------------------------------------------
def test_defaults(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, MINIMAL)))
    assert config.director == DirectorConfig(interface="eth0")
    director = config.director
    assert director is not None
    assert director.gateway is None
    assert director.dip is None
    assert director.dip_interface is None
    assert director.timeouts is None
    assert director.arping_count == 5
    assert config.realserver == RealServerConfig(arp_interfaces=())
    (service,) = config.services
    assert service.key == ServiceKey(Protocol.TCP, IPv4Address("10.0.0.10"), 80)
    assert service.scheduler == "wlc"
    assert service.persistence == 0
    assert service.drain_seconds == 30
    assert service.netmask is None
    assert service.extra == ()
    assert service.destinations == (
        Destination(IPv4Address("10.0.0.21"), port=80, forwarding=Forwarding.DR, weight=1),)


def test_partial_timeouts_default_to_zero_meaning_unchanged() -> None:
    config = parse_config(MINIMAL.replace('interface = "eth0"',
                                          'interface = "eth0"\ntimeouts = { tcp = 900 }'))
    assert config.director is not None
    assert config.director.timeouts == Timeouts(tcp=900, tcpfin=0, udp=0)
    empty = parse_config(MINIMAL.replace('interface = "eth0"',
                                         'interface = "eth0"\n[director.timeouts]'))
    assert empty.director is not None
    assert empty.director.timeouts == Timeouts(0, 0, 0)


def test_realserver_only_config_has_no_director() -> None:
    text = MINIMAL.replace('[director]\ninterface = "eth0"\n', "")
    config = parse_config(text + '\n[realserver]\narp_interfaces = ["eth1", "bond0.100"]\n')
    assert config.director is None
    assert config.realserver.arp_interfaces == ("eth1", "bond0.100")
    assert config.realserver_vips() == (IPv4Address("10.0.0.10"),)


def test_service_array_written_inline_is_the_same_as_array_of_tables() -> None:
    inline = ('service = [{ vip = "10.0.0.10", port = 80, real = [{ address = "10.0.0.21" }] }]\n'
              'director = { interface = "eth0" }\n')
    assert parse_config(inline) == parse_config(MINIMAL)


def test_crlf_line_endings_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "crlf.toml"
    path.write_bytes(MINIMAL.replace("\n", "\r\n").encode())
    assert load_config(str(path)).services == parse_config(MINIMAL).services


# --- several services ----------------------------------------------------------------------
SEVERAL = """\
[director]
interface = "eth0"

[[service]]
vip = "10.0.0.11"
port = 443
scheduler = "sh"
persistence = 300
drain_seconds = 0
real = [{ address = "10.0.0.21" }, { address = "10.0.0.22", weight = 0 }]

[[service]]
vip = "10.0.0.10"
port = 80
real = [{ address = "10.0.0.21", weight = 65535 }]

[[service]]
vip = "10.0.0.11"
port = 53
protocol = "udp"
scheduler = "rr"
real = [{ address = "10.0.0.23" }]

[[service]]
vip = "10.0.0.11"
port = 443
protocol = "udp"
real = [{ address = "10.0.0.21" }]

[[service]]
vip = "10.0.0.12"
port = 8080
forwarding = "nat"
real = [{ address = "10.0.1.21", port = 80 }, { address = "10.0.1.21", port = 81 }]

[[service]]
vip = "10.0.0.13"
port = 3868
protocol = "sctp"
forwarding = "tun"
real = [{ address = "10.0.2.21", port = 3868 }]

[[service]]
vip = "10.0.0.14"
port = 80
real = []
"""


def test_several_services_and_vips() -> None:
    config = parse_config(SEVERAL)
    keys = [str(service.key) for service in config.services]
    assert keys == ["tcp 10.0.0.11:443", "tcp 10.0.0.10:80", "udp 10.0.0.11:53",
                    "udp 10.0.0.11:443", "tcp 10.0.0.12:8080", "sctp 10.0.0.13:3868",
                    "tcp 10.0.0.14:80"]
    https, http, dns, quic, nat, tun, empty = config.services
    assert (https.scheduler, https.persistence, https.drain_seconds) == ("sh", 300, 0)
    assert [d.weight for d in https.destinations] == [1, 0]
    assert http.destinations[0].weight == 65535
    assert dns.key.protocol is Protocol.UDP
    assert dns.service_args() == ("-u", "10.0.0.11:53", "-s", "rr")
    assert quic.key.protocol is Protocol.UDP
    assert https.service_args() == ("-t", "10.0.0.11:443", "-s", "sh", "-p", "300")
    assert [(d.port, d.forwarding) for d in nat.destinations] == [
        (80, Forwarding.NAT), (81, Forwarding.NAT)]
    assert nat.destination_args(nat.destinations[0])[-4:] == ("10.0.1.21:80", "-m", "-w", "1")
    assert tun.key.args() == ("--sctp-service", "10.0.0.13:3868")
    assert tun.destinations[0].forwarding is Forwarding.TUN
    assert empty.destinations == ()
    # Every VIP once, in the order of first appearance.
    assert config.director_vips() == tuple(
        IPv4Address(a) for a in ("10.0.0.11", "10.0.0.10", "10.0.0.12", "10.0.0.13",
                                 "10.0.0.14"))
    # Only VIPs with a DR real server go on a real server's lo: not the NAT one, not the
    # tunnel one, not the service without real servers.
    assert config.realserver_vips() == (IPv4Address("10.0.0.11"), IPv4Address("10.0.0.10"))


def test_realserver_vips_lists_only_dr_services() -> None:
    text = """\
[[service]]
vip = "10.0.0.30"
port = 80
forwarding = "nat"
real = [{ address = "10.0.1.1", port = 8080 }]

[[service]]
vip = "10.0.0.31"
port = 80
forwarding = "tun"
real = [{ address = "10.0.1.1" }]

[[service]]
vip = "10.0.0.32"
port = 80
real = [{ address = "10.0.1.1" }]

[[service]]
vip = "10.0.0.30"
port = 443
real = [{ address = "10.0.1.1" }]
"""
    config = parse_config(text)
    assert config.director_vips() == tuple(
        IPv4Address(f"10.0.0.{n}") for n in (30, 31, 32))
    # 10.0.0.30 is there because of its port-443 DR service (the last one), not the NAT one.
    assert config.realserver_vips() == (IPv4Address("10.0.0.32"), IPv4Address("10.0.0.30"))
    assert parse_config(text.replace('port = 443\nreal', 'port = 443\nforwarding = "nat"\nreal')
                        ).realserver_vips() == (IPv4Address("10.0.0.32"),)


def test_director_vips_dedups_in_config_order() -> None:
    text = "".join(
        f'[[service]]\nvip = "{vip}"\nport = {port}\nreal = [{{ address = "10.9.9.9" }}]\n'
        for vip, port in (("10.0.0.3", 80), ("10.0.0.1", 80), ("10.0.0.3", 443),
                          ("10.0.0.2", 80), ("10.0.0.1", 443)))
    config = parse_config(text)
    expected = tuple(IPv4Address(f"10.0.0.{n}") for n in (3, 1, 2))
    assert config.director_vips() == expected
    assert config.realserver_vips() == expected


def test_the_same_vip_and_port_under_two_protocols_is_two_services() -> None:
    text = "".join(
        f'[[service]]\nvip = "10.0.0.1"\nport = 53\nprotocol = "{proto}"\n'
        'real = [{ address = "10.0.0.2" }]\n' for proto in ("tcp", "udp", "sctp"))
    assert len(parse_config(text).services) == 3


# --- IPv6 ----------------------------------------------------------------------------------
def test_ipv6_service() -> None:
    text = """\
[director]
interface = "eth0"
gateway = "2001:db8::1"
dip = "2001:DB8::105/64"
dip_interface = "eth1"

[[service]]
vip = "2001:DB8:0:0::10"
port = 443
real = [{ address = "2001:db8::21", weight = 3 }, { address = "2001:db8::22" }]
"""
    config = parse_config(text)
    director = config.director
    assert director is not None
    assert director.gateway == IPv6Address("2001:db8::1")
    assert director.dip is not None and str(director.dip) == "2001:db8::105/64"
    (service,) = config.services
    assert service.key.address == IPv6Address("2001:db8::10")
    assert service.key.args() == ("-t", "[2001:db8::10]:443")
    assert service.destinations[0].endpoint() == "[2001:db8::21]:443"
    assert [d.weight for d in service.destinations] == [3, 1]
    assert config.realserver_vips() == (IPv6Address("2001:db8::10"),)


def test_ipv4_and_ipv6_services_side_by_side() -> None:
    text = MINIMAL + ('\n[[service]]\nvip = "2001:db8::10"\nport = 80\n'
                      'real = [{ address = "2001:db8::21" }]\n')
    config = parse_config(text)
    assert config.director_vips() == (IPv4Address("10.0.0.10"), IPv6Address("2001:db8::10"))


# --- NAT and the real server's port -------------------------------------------------------
def test_nat_can_change_the_port_dr_and_tun_inherit_it() -> None:
    nat = parse_config(MINIMAL.replace('real = [{ address = "10.0.0.21" }]',
                                       'forwarding = "nat"\n'
                                       'real = [{ address = "10.0.0.21", port = 8080 }]'))
    (dest,) = nat.services[0].destinations
    assert (dest.port, dest.forwarding) == (8080, Forwarding.NAT)
    assert nat.services[0].key.port == 80
    assert nat.realserver_vips() == ()
    same = parse_config(MINIMAL.replace('{ address = "10.0.0.21" }',
                                        '{ address = "10.0.0.21", port = 80 }'))
    assert same.services[0].destinations[0].port == 80
    tun = parse_config(MINIMAL.replace("port = 80\n", 'port = 80\nforwarding = "tun"\n'))
    assert tun.services[0].destinations[0] == Destination(
        IPv4Address("10.0.0.21"), 80, Forwarding.TUN, 1, tunnel=Tunnel())  # plain IPIP


def test_one_real_server_on_two_ports_under_nat() -> None:
    config = parse_config(MINIMAL.replace(
        'real = [{ address = "10.0.0.21" }]',
        'forwarding = "nat"\nreal = [{ address = "10.0.0.21", port = 8080 },'
        ' { address = "10.0.0.21", port = 8081 }]'))
    assert [d.ident[1] for d in config.services[0].destinations] == [8080, 8081]


# --- bounds and choices that are accepted --------------------------------------------------
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_kernel_scheduler_is_accepted(scheduler: str) -> None:
    config = parse_config(MINIMAL.replace("port = 80", f'port = 80\nscheduler = "{scheduler}"'))
    assert config.services[0].scheduler == scheduler


def _service(config: Config) -> VirtualService:
    return config.services[0]


def _director(config: Config) -> DirectorConfig:
    assert config.director is not None
    return config.director


@pytest.mark.parametrize(("old", "new", "get", "want"), [
    ("port = 80", "port = 1", lambda c: _service(c).key.port, 1),
    ("port = 80", "port = 65535", lambda c: _service(c).key.port, 65535),
    ("port = 80", "port = 80\npersistence = 2147483", lambda c: _service(c).persistence,
     2147483),
    ("port = 80", "port = 80\ndrain_seconds = 86400", lambda c: _service(c).drain_seconds,
     86400),
    ("port = 80", "port = 80\ndrain_seconds = 0", lambda c: _service(c).drain_seconds, 0),
    ('"10.0.0.21" }', '"10.0.0.21", weight = 0 }',
     lambda c: _service(c).destinations[0].weight, 0),
    ('"10.0.0.21" }', '"10.0.0.21", weight = 65535 }',
     lambda c: _service(c).destinations[0].weight, 65535),
    ('"eth0"', '"eth0"\narping_count = 0', lambda c: _director(c).arping_count, 0),
    ('"eth0"', '"eth0"\narping_count = 100', lambda c: _director(c).arping_count, 100),
    ('"eth0"', '"eth0"\ntimeouts = { tcp = 2147483, tcpfin = 0, udp = 2147483 }',
     lambda c: _director(c).timeouts, Timeouts(2147483, 0, 2147483)),
])
def test_boundary_values_are_accepted(old: str, new: str, get: Any, want: object) -> None:
    assert get(parse_config(MINIMAL.replace(old, new))) == want


@pytest.mark.parametrize("name", ["eth0", "enp0s31f6", "eth0.100", "br-lan", "wlan_1",
                                  "bond0", "a", "x" * (IFNAMSIZ - 1)])
def test_interface_names_the_kernel_accepts(name: str) -> None:
    config = parse_config(f'[director]\ninterface = "{name}"\n'
                          f'[realserver]\narp_interfaces = ["{name}"]\n')
    assert config.director is not None
    assert config.director.interface == name
    assert config.realserver.arp_interfaces == (name,)


@pytest.mark.parametrize("address", ["10.0.0.10", "192.0.2.1", "172.16.0.1",
                                     "2001:db8::10", "fd00::10"])
def test_host_addresses_are_accepted(address: str) -> None:
    real = "10.0.0.21" if ip_address(address).version == 4 else "2001:db8::21"
    config = parse_config(MINIMAL.replace('"10.0.0.10"', f'"{address}"').replace(
        '"10.0.0.21"', f'"{real}"'))
    assert config.services[0].key.address == ip_address(address)


def _host_address_by_ipaddress(text: str) -> object:
    """The rules of config._host_address written with ipaddress alone, as they were before
    its IPv4 fast path: what it must still accept and refuse."""
    address = ip_address(text)
    if "%" in text or address.is_unspecified or address.is_multicast or address.is_loopback \
            or address.is_reserved or (address.version == 6 and address.ipv4_mapped):
        raise ValueError(text)
    return address


@pytest.mark.parametrize("text", [
    "10.0.0.1", "0.0.0.1", "0.0.0.0", "0.1.2.3", "1.0.0.0", "126.255.255.255",  # noqa: S104
    "127.0.0.1",
    "127.255.255.254", "128.0.0.0", "223.255.255.255", "224.0.0.0", "239.1.2.3",
    "240.0.0.1", "255.255.255.255", "1.2.3.255", "1.2.3.256", "01.2.3.4", "1.2.3.04",
    "1.2.3.00", "1.2.3", "1.2.3.4.5", "1.2.3.4.", ".1.2.3.4", "1..2.3", "0x1.2.3.4",
    " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\n", "1.2.3.4\0", "1.2.3.4%eth0", "\u0661.2.3.4",
    "1.2.3.\uff14", "1.2.3.4/32", "", "1", "4294967295", "::1.2.3.4", "::ffff:1.2.3.4",
    "2001:db8::1", "fe80::1%eth0", "::", "ff02::1", "::1"])
def test_host_address_fast_path_agrees_with_ipaddress(text: str) -> None:
    from lvs_scripts.config import _host_address

    try:
        want: object = _host_address_by_ipaddress(text)
    except ValueError:
        with pytest.raises(ValueError):
            _host_address(text)
        return
    got = _host_address(text)
    assert (type(got), got) == (type(want), want)


# --- where the config comes from ----------------------------------------------------------
def test_lvs_config_env_var_is_used_when_no_path_is_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv("LVS_CONFIG", str(path))
    config = load_config()
    assert config.path == str(path)
    assert config == parse_config(MINIMAL, str(path))
    # An explicit path wins over the environment.
    assert load_config(str(SEED)).path == str(SEED)


def test_cli_reads_lvs_config_when_no_c_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_programs: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "from-env.toml"
    monkeypatch.setenv("LVS_CONFIG", str(missing))
    assert director_main(["start"]) == 6
    assert f"lvs-director: {missing}: config file not found" in capsys.readouterr().err
    # status cannot tell without a config: LSB "status unknown"
    assert director_main(["status"]) == 4
    assert f"lvs-director: status unknown: {missing}: config file not found" in \
        capsys.readouterr().err
    no_programs.assert_not_called()


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "lvs.toml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    err = info.value
    assert (err.path, err.key, err.value) == (str(path), "", None)
    assert err.exit_code == 6
    assert str(err) == f"{path}: config file not found (use -c FILE or LVS_CONFIG)"


@pytest.mark.parametrize("main", [director_main, realserver_main])
@pytest.mark.parametrize("dry_run", [False, True])
def test_missing_file_exits_6(main: Any, dry_run: bool, tmp_path: Path, no_programs: Any,
                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.toml"
    argv = ["-c", str(path), "start"] + (["--dry-run"] if dry_run else [])
    assert main(argv) == 6
    out, err = capsys.readouterr()
    assert out == ""
    assert str(path) in err
    assert "not found" in err
    no_programs.assert_not_called()


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert info.value.path == str(tmp_path)
    assert "cannot read the config file" in str(info.value)


def test_a_file_over_the_limit_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    padding = MAX_CONFIG_BYTES + 1 - len(MINIMAL) - 2
    path.write_text(MINIMAL + "#" + "x" * padding + "\n", encoding="utf-8")
    assert path.stat().st_size == MAX_CONFIG_BYTES + 1
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert (info.value.path, info.value.key) == (str(path), "")
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in str(info.value)


def test_a_file_at_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    padding = MAX_CONFIG_BYTES - len(MINIMAL) - 2
    path.write_text(MINIMAL + "#" + "x" * padding + "\n", encoding="utf-8")
    assert path.stat().st_size == MAX_CONFIG_BYTES
    assert load_config(str(path)).services == parse_config(MINIMAL).services


@pytest.mark.parametrize("raw", [
    b"# caf\xe9 (Latin-1)\n",
    b"\xff\xfe[\x00d\x00i\x00r\x00]\x00",  # UTF-16 with a BOM
    b'[director]\ninterface = "eth0"\n# \xc3\n',  # a truncated UTF-8 sequence
])
def test_non_utf8_is_rejected(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert (info.value.path, info.value.key) == (str(path), "")
    assert "not UTF-8 text (byte " in str(info.value)


def test_utf8_comments_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "# Übergang — director on eth0 ✓\n" + MINIMAL)
    assert load_config(str(path)).services == parse_config(MINIMAL).services


def test_config_error_message_format() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL.replace('{ address = "10.0.0.21" }',
                                     '{ address = "10.0.0.21", weight = 70000 }'), "/etc/x.toml")
    err = info.value
    assert (err.path, err.key, err.value) == ("/etc/x.toml", "service[0].real[0].weight", 70000)
    assert str(err) == ("/etc/x.toml: service[0].real[0].weight = 70000: "
                        "must be an integer from 0 to 65535")


# --- what reaches a message from the file is escaped --------------------------------------
def test_a_key_name_is_escaped_like_a_value() -> None:
    text = MINIMAL.replace('interface = "eth0"',
                           'interface = "eth0"\n"x\\u001b[2J\\u202e\\n" = "\\u001b[31m"')
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/x.toml")
    message = str(info.value)
    assert message.isprintable(), message
    assert message.startswith("/etc/x.toml: director.x\\x1b[2J\\u202e\\n = '\\x1b[31m': "
                              "unknown key")
    assert info.value.key == "director.x\\x1b[2J\\u202e\\n"


def test_a_huge_key_name_is_cut_short() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + f'\n[realserver]\n{"k" * 5000} = 1\n')
    assert len(info.value.key) <= 80
    assert len(str(info.value)) < 400


# --- a config with nothing to do ----------------------------------------------------------
NO_SERVICE = '[director]\ninterface = "eth0"\n[realserver]\narp_interfaces = ["eth0"]\n'


@pytest.mark.parametrize("role", ["director", "realserver"])
def test_no_service_is_an_error_for_either_role(role: str) -> None:
    config = parse_config(NO_SERVICE, "/etc/x.toml")
    with pytest.raises(ConfigError) as info:
        config.require_services(role)
    assert (info.value.path, info.value.key, info.value.exit_code) == ("/etc/x.toml",
                                                                       "service", 6)
    assert f"set {role}.allow_no_services = true" in str(info.value)
    parse_config(MINIMAL).require_services(role)  # one service is enough


def test_allow_no_services_is_per_role() -> None:
    director_only = parse_config(NO_SERVICE.replace('"eth0"\n',
                                                    '"eth0"\nallow_no_services = true\n', 1))
    assert director_only.director is not None and director_only.director.allow_no_services
    director_only.require_services("director")
    with pytest.raises(ConfigError):
        director_only.require_services("realserver")
    realserver_only = parse_config("[realserver]\nallow_no_services = true\n")
    realserver_only.require_services("realserver")
    assert realserver_only.realserver.allow_no_services


@pytest.mark.parametrize("main", [director_main, realserver_main])
@pytest.mark.parametrize("dry_run", [False, True])
def test_cli_rejects_dev_null(main: Any, dry_run: bool, no_programs: Any,
                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-c", os.devnull, "start"] + (["--dry-run"] if dry_run else [])
    assert main(argv) == 6
    out, err = capsys.readouterr()
    key = "director" if main is director_main else "service"  # no [director] comes first
    assert (out, f"{os.devnull}: {key}" in err) == ("", True), err
    no_programs.assert_not_called()


# --- the gateway's family ------------------------------------------------------------------
def test_a_gateway_of_the_family_of_one_vip_among_several_is_fine() -> None:
    both = MINIMAL.replace('interface = "eth0"', 'interface = "eth0"\ngateway = "2001:db8::1"')
    with pytest.raises(ConfigError) as info:
        parse_config(both)
    assert (info.value.key, info.value.value) == ("director.gateway", "2001:db8::1")
    config = parse_config(both + '[[service]]\nvip = "2001:db8::10"\nport = 80\n'
                          'real = [{ address = "2001:db8::21" }]\n')
    assert config.director is not None and config.director.gateway == IPv6Address("2001:db8::1")


# --- health checking: [service.check], sorry_server, [director] metrics ------------------------
CHECKED = """
[director]
interface = "eth0"
metrics = "[::1]:9717"

[[service]]
vip = "192.168.30.254"
port = 80
sorry_server = "192.168.30.200"
real = [ { address = "192.168.30.111" } ]

[service.check]
type = "http"
interval = 2
timeout = 1
on_failure = "remove"

[[service]]
vip = "2001:db8::10"
port = 443
forwarding = "nat"
sorry_server = "[2001:db8::99]:8443"
real = [ { address = "2001:db8::11", port = 8443 } ]
"""


def test_check_sorry_server_and_metrics_are_read() -> None:
    from lvs_scripts.checks import CheckSpec

    config = parse_config(CHECKED, "checked.toml")
    assert config.director is not None
    assert config.director.metrics == (ip_address("::1"), 9717)
    web, tls = config.services
    assert web.check == CheckSpec(type="http", interval=2.0, timeout=1.0,
                                  on_failure="remove")
    assert web.sorry_server == Destination(ip_address("192.168.30.200"), 80)
    assert tls.check is None
    assert tls.sorry_server == Destination(ip_address("2001:db8::99"), 8443,
                                           Forwarding.NAT, 1)


def test_a_service_without_check_is_what_it_was() -> None:
    """No [service.check], no sorry_server: the same service as before the feature."""
    plain = CHECKED.replace('sorry_server = "192.168.30.200"\n', "").split("[service.check]")[0]
    service = parse_config(plain, "plain.toml").services[0]
    assert service.check is None and service.sorry_server is None
