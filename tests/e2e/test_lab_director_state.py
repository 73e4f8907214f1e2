"""lvs-director on the real kernel when the host changes under it (issue 9): the default
route it replaced in all its forms (changed by hand, gateway dropped from the config,
`onlink`, device-only, with a metric, start/stop twice), a start killed just after its
`ipvsadm -R` batch, a service someone else made on a configured VIP:port, and an
interface that vanished.

Each test starts from a new director namespace (the `fresh` fixture; see
labhosts.reset) and checks that stop leaves it exactly as before start: IPVS services
and timeouts, addresses, routes. No traffic: no real server needs to be set up, and the
configs send no ARP announcements (arping_count = 0), so each test costs only its CLI
calls.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.labhosts import (
    GATEWAY,
    LAB_ONLY,
    REALS,
    VENV_BIN,
    VIP,
    Done,
    in_ns,
    lvs_env,
    run_on,
    sh,
    wait_for,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

OURS = "192.168.30.201"  # the gateway of the configs; the namespace's own is GATEWAY (.200)


def config(path: Path, gateway: str | None = OURS, dip_interface: str | None = None,
           service: str = f"{VIP}:80") -> Path:
    """One wrr service with rs1 and rs2; optionally a gateway and a DIP."""
    address, port = service.rsplit(":", 1)
    lines = ['[director]', 'interface = "eth0"', "arping_count = 0"]
    if gateway:
        lines.append(f'gateway = "{gateway}"')
    if dip_interface:
        lines += ['dip = "10.9.0.5/24"', f'dip_interface = "{dip_interface}"']
    reals = ", ".join(f'{{ address = "{REALS[name]}" }}' for name in ("rs1", "rs2"))
    lines += ["", "[[service]]", f'vip = "{address}"', f"port = {port}", 'scheduler = "wrr"',
              f"real = [{reals}]", ""]
    path.write_text("\n".join(lines))
    return path


def cli(action: str, conf: Path, path_prefix: str | None = None) -> Done:
    return run_on("director", [str(VENV_BIN / "lvs-director"), "-c", str(conf), action],
                  lvs_env("director", conf, path_prefix))


def must(done: Done) -> Done:
    assert done.returncode == 0, str(done)
    return done


def snapshot() -> dict[str, list[str]]:
    """What start may change on the director and stop must put back."""
    out = sh("director", "ipvsadm -S -n; echo --; ipvsadm -L --timeout; echo --; "
                         "ip -o addr show; echo --; ip route show")
    ipvs, timeouts, addrs, routes = (part.strip().splitlines() for part in out.split("--\n"))
    return {"ipvs": ipvs, "timeouts": timeouts, "addresses": addrs, "routes": routes}


def defaults() -> list[str]:
    """The default routes, one a line, spaces normalised (ip ends some lines with one)."""
    return [" ".join(line.split())
            for line in sh("director", "ip route show default").splitlines()]


def by_hand(*commands: str) -> None:
    sh("director", "; ".join(commands))


# ---------------------------------------------------------------- 13. the default route


def test_a_route_changed_by_hand_after_start_is_left_alone(fresh: None, configs: Path) -> None:
    conf = config(configs / "lvs.toml")
    before = snapshot()
    must(cli("start", conf))
    assert defaults() == [f"default via {OURS} dev eth0"]
    by_hand("ip route replace default via 192.168.30.202 dev eth0")

    must(cli("stop", conf))
    assert defaults() == ["default via 192.168.30.202 dev eth0"]
    now = snapshot()
    assert {**now, "routes": []} == {**before, "routes": []}


def test_the_gateway_removed_from_the_config_before_stop(fresh: None, configs: Path) -> None:
    conf = config(configs / "lvs.toml")
    before = snapshot()
    must(cli("start", conf))
    config(conf, gateway=None)

    must(cli("stop", conf))
    assert snapshot() == before


@pytest.mark.parametrize("previous", [
    "default via 10.9.9.1 dev eth0 onlink",  # no route to 10.9.9.1: needs onlink
    "default dev eth0 scope link",  # device only
    f"default via {GATEWAY} dev eth0 metric 100",
], ids=["onlink", "device-only", "metric"])
def test_the_previous_route_comes_back_as_it_was(fresh: None, configs: Path,
                                                 tmp_path: Path, previous: str) -> None:
    by_hand("ip route del default", f"ip route add {previous}")
    conf = config(configs / "lvs.toml")
    watch = watch_default_route(tmp_path)
    before = snapshot()
    assert defaults() == [previous]
    must(cli("start", conf, path_prefix=str(watch)))
    # Ours replaces the previous route in place, at its metric: one default route.
    metric = previous.partition(" metric ")[2]
    assert defaults() == [f"default via {OURS} dev eth0" + (f" metric {metric}" if metric
                                                            else "")]

    must(cli("stop", conf, path_prefix=str(watch)))
    assert defaults() == [previous]
    assert snapshot() == before
    gaps = watch / "without-default"
    assert not gaps.exists(), f"no default route after: {gaps.read_text()}"


# An `ip` first on PATH that runs the real one and, after each `ip ... route ...`, notes
# the command if the director has no default route left.
WATCH_DEFAULT_ROUTE = """#!/bin/sh
{real} "$@"
rc=$?
case " $* " in
*" route "*) {real} route show default | grep -q . || echo "$*" >> "{dir}/without-default" ;;
esac
exit $rc
"""


def watch_default_route(tmp_path: Path) -> Path:
    wrapper = tmp_path / "watch"
    wrapper.mkdir()
    real = sh("director", "command -v ip").strip()
    (wrapper / "ip").write_text(WATCH_DEFAULT_ROUTE.format(dir=wrapper, real=real))
    (wrapper / "ip").chmod(0o755)
    return wrapper


def test_start_stop_twice(fresh: None, configs: Path) -> None:
    conf = config(configs / "lvs.toml")
    before = snapshot()
    for _ in range(2):
        must(cli("start", conf))
        assert defaults() == [f"default via {OURS} dev eth0"]
        must(cli("stop", conf))
        assert snapshot() == before


# ---------------------------------------------------------------- 14. kill -9 after -R

# An `ipvsadm` first on PATH: passes everything through to the real one, but once an
# `ipvsadm -R` has run (its batch is in the kernel), the next call says so in a file and
# waits for a line from a fifo nobody writes to: start is killed there, before it could
# record the services it created.
BLOCK_AFTER_RESTORE = """#!/bin/sh
if [ -e "{dir}/restored" ]; then
    : > "{dir}/blocked"
    read -r _ < "{dir}/fifo"
    exit 1
fi
if [ "$1" = -R ]; then
    {real} "$@" || exit
    : > "{dir}/restored"
    exit 0
fi
exec {real} "$@"
"""


def test_start_killed_after_the_batch_then_start_owns_and_stop_removes(
        fresh: None, configs: Path, tmp_path: Path) -> None:
    conf = config(configs / "lvs.toml")
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    real = sh("director", "command -v ipvsadm").strip()
    (wrapper / "ipvsadm").write_text(BLOCK_AFTER_RESTORE.format(dir=wrapper, real=real))
    (wrapper / "ipvsadm").chmod(0o755)
    os.mkfifo(wrapper / "fifo")
    before = snapshot()

    argv = [str(VENV_BIN / "lvs-director"), "-c", str(conf), "start"]
    process = subprocess.Popen(in_ns("director", argv, lvs_env("director", conf,
                                                               str(wrapper))),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        wait_for(lambda: (wrapper / "blocked").exists() or process.poll() is not None, 120,
                 interval=0.2, what="the call after ipvsadm -R")
        assert process.poll() is None, process.communicate()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    assert f"-A -t {VIP}:80 -s wrr" in snapshot()["ipvs"]  # the batch did reach the kernel

    must(cli("start", conf))
    status = cli("status", conf)
    assert status.returncode == 0, str(status)
    assert "not managed" not in status.stdout.lower(), str(status)
    must(cli("stop", conf))
    assert snapshot() == before


# ---------------------------------------------------------------- 15. someone else's service


def test_a_foreign_service_on_a_configured_vip_port_is_never_touched(
        fresh: None, configs: Path) -> None:
    foreign = [f"-A -t {VIP}:80 -s rr", f"-a -t {VIP}:80 -r {REALS['rs3']}:80 -g -w 1",
               f"-a -t {VIP}:80 -r {REALS['rs4']}:80 -g -w 1"]
    by_hand(*(f"ipvsadm {line}" for line in foreign))
    conf = config(configs / "lvs.toml")
    before = snapshot()

    def foreign_intact(after: str) -> None:
        lines = [line for line in snapshot()["ipvs"] if f" {VIP}:80 " in f"{line} "]
        assert lines == foreign, (after, lines)

    started = cli("start", conf)
    foreign_intact("start")
    status = cli("status", conf)
    said = started.returncode != 0 and f"{VIP}:80" in started.stderr
    said = said or (status.returncode == 150 and f"{VIP}:80" in status.stdout)
    assert said, f"start and status both accepted it:\n{started}\n{status}"
    reloaded = cli("reload", conf)
    foreign_intact(f"reload (exit {reloaded.returncode})")
    must(cli("stop", conf))
    foreign_intact("stop")
    assert snapshot() == before


# ---------------------------------------------------------------- 16. an interface vanishes


def test_the_dip_interface_deleted_after_start_then_stop_restores_the_rest(
        fresh: None, configs: Path) -> None:
    by_hand("ip link add eth1 type veth peer name eth1p", "ip link set eth1p up")
    conf = config(configs / "lvs.toml", dip_interface="eth1")
    before = snapshot()
    must(cli("start", conf))
    assert "10.9.0.5/24" in sh("director", "ip -o addr show dev eth1")
    by_hand("ip link del eth1")

    stopped = cli("stop", conf)
    assert stopped.returncode == 0, str(stopped)

    def other(snap: dict[str, list[str]]) -> dict[str, list[str]]:
        return {key: [line for line in lines if "eth1" not in line]
                for key, lines in snap.items()}
    assert other(snapshot()) == other(before)
