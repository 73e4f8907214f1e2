"""lvs-realserver on the real kernel when the host or the files change under it (issue 9):
an arp interface deleted, the config gone or broken, a start killed, an unsafe state
path, an interface leaving arp_interfaces, a config without services.

Each test gets a namespace of its own, made for it and deleted after it (sysctls and
addresses are per namespace): eth0 and eth1, each a veth whose peer is in the VM's root
namespace, so that deleting the peer makes the interface vanish as unplugging a VLAN or
a veth would. It does not need the topology: a real server's start and stop only touch
its own addresses and ARP settings. The ARP settings start from values other than the
kernel's defaults, so that "put back" can be told from "set to 0".

Every test compares the namespace with how it was before start: addresses (`ip -o addr
show`), routes, and every arp_ignore/arp_announce under /proc/sys/net/ipv4/conf.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.labhosts import LAB_ONLY, RUN_ROOT, VENV_BIN, Done, in_ns, run_on, sh, wait_for

pytestmark = [pytest.mark.lab, LAB_ONLY]

VIPS = ("192.168.30.254", "192.168.30.253")
CONFIG = f"""
[realserver]
arp_interfaces = ["eth0", "eth1"]

[[service]]
vip = "{VIPS[0]}"
port = 80
real = [{{ address = "192.168.30.111" }}]

[[service]]
vip = "{VIPS[1]}"
port = 80
real = [{{ address = "192.168.30.111" }}]
"""
# Before start: not what start sets (1 and 2), not the kernel's defaults either.
PREVIOUS = {"all": (0, 1), "eth0": (2, 0), "eth1": (0, 1)}  # (arp_ignore, arp_announce)
NUMBERS = itertools.count(1)


class Host:
    """A fresh namespace playing a real server, with its CLI's state and lock dirs."""

    def __init__(self, configs: Path) -> None:
        number = next(NUMBERS)
        self.name = f"rsx{number}"
        self.peers = {"eth0": f"rsx{number}a", "eth1": f"rsx{number}b"}
        self.config = configs / "lvs.toml"
        self.config.write_text(CONFIG)
        self.state_dir = RUN_ROOT / self.name / "state"
        self.lock_dir = RUN_ROOT / self.name / "lock"
        sets = " ".join(f"net.ipv4.conf.{dev}.arp_ignore={ignore} "
                        f"net.ipv4.conf.{dev}.arp_announce={announce}"
                        for dev, (ignore, announce) in PREVIOUS.items())
        script = f"""
ip netns add {self.name}
ip -n {self.name} link set lo up
ip link add {self.peers['eth0']} type veth peer name eth0 netns {self.name}
ip link add {self.peers['eth1']} type veth peer name eth1 netns {self.name}
ip -n {self.name} addr add 10.77.{number % 250}.2/24 dev eth0
ip -n {self.name} link set eth0 up
ip -n {self.name} link set eth1 up
ip -n {self.name} route add default via 10.77.{number % 250}.1
ip netns exec {self.name} sysctl -q -w {sets}
"""
        subprocess.run(["sh", "-ec", script], check=True, timeout=60)

    def remove(self) -> None:
        script = " ".join(f"ip link del {peer} 2>/dev/null;" for peer in self.peers.values())
        subprocess.run(["sh", "-c", f"{script} ip netns delete {self.name}"], check=False,
                       timeout=60)
        shutil.rmtree(RUN_ROOT / self.name, ignore_errors=True)

    def env(self, path_prefix: str | None = None) -> dict[str, str]:
        env = {"LVS_STATE_DIR": str(self.state_dir), "LVS_LOCK_DIR": str(self.lock_dir)}
        if path_prefix is not None:
            env["PATH"] = f"{path_prefix}:{os.environ['PATH']}"
        return env

    def argv(self, action: str, config: Path | str | None = None) -> list[str]:
        return [str(VENV_BIN / "lvs-realserver"), "-c", str(config or self.config), action]

    def cli(self, action: str, config: Path | str | None = None) -> Done:
        return run_on(self.name, self.argv(action, config), self.env())

    def snapshot(self) -> dict[str, list[str]]:
        """Addresses, routes, every ARP setting (as `DEVICE/KEY:VALUE`)."""
        out = sh(self.name, "ip -o addr show; echo --; ip route show; echo --; "
                            "cd /proc/sys/net/ipv4/conf && grep . */arp_ignore */arp_announce")
        addrs, routes, arp = (part.strip().splitlines() for part in out.split("--\n"))
        return {"addresses": addrs, "routes": routes, "arp": sorted(arp)}

    def arp(self, device: str) -> tuple[int, int]:
        out = sh(self.name, f"cat /proc/sys/net/ipv4/conf/{device}/arp_ignore "
                            f"/proc/sys/net/ipv4/conf/{device}/arp_announce").split()
        return int(out[0]), int(out[1])

    def addresses(self, device: str) -> str:
        return sh(self.name, f"ip -o addr show dev {device}")


@pytest.fixture
def host(configs: Path) -> Iterator[Host]:
    made = Host(configs)
    try:
        yield made
    finally:
        made.remove()


def started(host: Host) -> dict[str, list[str]]:
    """The namespace before start; then start, checked to have done its job."""
    before = host.snapshot()
    done = host.cli("start")
    assert done.returncode == 0, str(done)
    assert all(vip in host.addresses("lo") for vip in VIPS), host.addresses("lo")
    assert host.arp("eth1") == (1, 2)
    return before


# ---------------------------------------------------------------- 1. an interface vanishes


def without(snapshot: dict[str, list[str]], device: str) -> dict[str, list[str]]:
    """The snapshot less the lines of one interface (one that was deleted)."""
    def other(line: str) -> bool:
        words = line.split()
        return not (words[1:2] == [device] or f" dev {device} " in f"{line} "
                    or line.startswith(f"{device}/"))
    return {key: [line for line in lines if other(line)] for key, lines in snapshot.items()}


def test_an_arp_interface_deleted_after_start_then_stop_restores_the_rest(host: Host) -> None:
    before = started(host)
    subprocess.run(["ip", "link", "del", host.peers["eth1"]], check=True)  # eth1 goes too

    stopped = host.cli("stop")
    assert stopped.returncode == 0, str(stopped)
    assert "eth1" in stopped.stderr, str(stopped)
    assert host.snapshot() == without(before, "eth1")


# ---------------------------------------------------------------- 2. the config gone or broken


@pytest.mark.parametrize("config", ["removed", "invalid TOML"])
def test_stop_and_status_work_from_the_state_file_alone(host: Host, config: str) -> None:
    before = started(host)
    if config == "removed":
        host.config.unlink()
    else:
        host.config.write_text("[realserver\narp_interfaces = [\n")

    status = host.cli("status")
    assert status.returncode == 4, str(status)
    for vip in VIPS:
        assert vip in status.stdout, str(status)
    stopped = host.cli("stop")
    assert stopped.returncode == 0, str(stopped)
    assert host.snapshot() == before


# ---------------------------------------------------------------- 3. kill -9 during start

# A `sysctl` first on PATH: the second `sysctl -w` changes the value for real, says so in
# a file, then waits for a line from a fifo nobody writes to: killed there, the start
# never hears that the value changed.
SLOW_SYSCTL = """#!/bin/sh
case " $* " in
*" -w "*)
    echo x >> "{dir}/writes"
    if [ "$(wc -l < "{dir}/writes")" -eq 2 ]; then
        {real} "$@" || exit
        : > "{dir}/blocked"
        read -r _ < "{dir}/fifo"
        exit
    fi
    ;;
esac
exec {real} "$@"
"""


def test_start_killed_while_sysctl_runs_then_stop_restores(host: Host, tmp_path: Path) -> None:
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    real = shutil.which("sysctl")
    assert real is not None
    (wrapper / "sysctl").write_text(SLOW_SYSCTL.format(dir=wrapper, real=real))
    (wrapper / "sysctl").chmod(0o755)
    os.mkfifo(wrapper / "fifo")
    before = host.snapshot()

    process = subprocess.Popen(in_ns(host.name, host.argv("start"), host.env(str(wrapper))),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        wait_for(lambda: (wrapper / "blocked").exists() or process.poll() is not None, 120,
                 interval=0.2, what="the second sysctl -w")
        assert process.poll() is None, process.communicate()
        assert host.snapshot() != before  # two values changed already
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    shutil.rmtree(wrapper)

    stopped = host.cli("stop")
    assert stopped.returncode == 0, str(stopped)
    assert host.snapshot() == before


# ---------------------------------------------------------------- 4. unsafe state paths
# The full matrix (every case with start, stop and status) runs on the host against the
# fakes: tests/test_state_owner.py. Here, the two that matter most, on the real thing.


def test_stop_refuses_a_state_file_another_user_owns(host: Host) -> None:
    started(host)
    state_files = [path for path in host.state_dir.iterdir() if path.suffix == ".json"]
    assert len(state_files) == 1, state_files
    os.chown(state_files[0], 12345, 12345)
    during = host.snapshot()

    refused = host.cli("stop")
    assert refused.returncode != 0, str(refused)
    assert str(state_files[0]) in refused.stdout + refused.stderr, str(refused)
    assert host.snapshot() == during


def test_start_refuses_a_world_writable_state_directory(host: Host) -> None:
    host.state_dir.mkdir(parents=True)
    host.state_dir.chmod(0o1777)
    before = host.snapshot()

    refused = host.cli("start")
    assert refused.returncode != 0, str(refused)
    assert str(host.state_dir) in refused.stdout + refused.stderr, str(refused)
    assert host.snapshot() == before


# ---------------------------------------------------------------- 5. reload drops an interface


def test_reload_puts_back_the_arp_settings_of_an_interface_it_no_longer_lists(
        host: Host) -> None:
    before = started(host)
    host.config.write_text(CONFIG.replace('["eth0", "eth1"]', '["eth0"]'))

    reloaded = host.cli("reload")
    assert reloaded.returncode == 0, str(reloaded)
    assert host.arp("eth1") == PREVIOUS["eth1"]
    assert host.arp("eth0") == (2, 2)  # arp_ignore 2 was there before: stricter, kept
    stopped = host.cli("stop")
    assert stopped.returncode == 0, str(stopped)
    assert host.snapshot() == before


# ---------------------------------------------------------------- 7. no services


@pytest.mark.parametrize("content", ["", "# nothing here yet\n", None],
                         ids=["empty", "comments", "dev-null"])
def test_a_config_without_services_is_refused(host: Host, content: str | None) -> None:
    if content is not None:
        host.config.write_text(content)
    before = host.snapshot()

    refused = host.cli("start", config=host.config if content is not None else "/dev/null")
    assert refused.returncode == 6, str(refused)
    assert host.snapshot() == before
    assert not host.state_dir.exists() or not any(host.state_dir.glob("*.json"))
