"""lvs-director watch on the real kernel: issue 10's lab scenarios 1, 2 and 5.

The director is started through init.d/lvs-director and the watcher through
init.d/lvs-director-watch, from one config with an http check (interval 2, timeout 1,
rise 2, fall 2). rs2's web server (busybox httpd) is stopped: rs2 must be at weight 0
within interval * fall + timeout + 1 s, and the client's requests must all be answered,
none by rs2; a reload, and a kill -9 of the watcher and a new one, keep it at 0; started
again, rs2 must be back at its weight after `rise` checks.
The measured times are printed (`-s`) for the README.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.labhosts import (
    CHECKOUT,
    LAB_ONLY,
    REALS,
    RUN_ROOT,
    VENV_BIN,
    WEIGHTS,
    curl_vip,
    initd,
    lvs_env,
    realservers_by_hand,
    run_on,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

INTERVAL, TIMEOUT, RISE, FALL = 2, 1, 2, 2
BOUND = INTERVAL * FALL + TIMEOUT + 1  # issue 10: failure to weight 0, at most
WATCH_INITD = CHECKOUT / "init.d" / "lvs-director-watch"
WWW = "/run/lab-www"
HEALTH_FILE = RUN_ROOT / "director" / "state" / "lvs-director.health.json"
PIDFILE = RUN_ROOT / "director" / "watch.pid"


def httpd_pid(name: str) -> int | None:
    """The pid of rs NAME's busybox httpd (lab/topology.sh started it), found exactly by
    its command line."""
    wanted = ["busybox", "httpd", "-p", "80", "-h", f"{WWW}/{name}"]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode().split("\0")[:-1]
            except OSError:
                continue
            if argv == wanted:
                return int(entry.name)
    return None


def start_httpd(name: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, "busybox", "httpd", "-p", "80", "-h",
                    f"{WWW}/{name}"], check=True, timeout=60)


def weight_of(name: str) -> int | None:
    return weights().get(REALS[name])


def weights() -> dict[str, int]:
    """Real server -> weight, from /proc/PID/net/ip_vs of the watcher (it lives in the
    director's namespace): read without starting a program, so a poll costs microseconds
    and the measured times are not padded by tenths of a second per `ipvsadm` start."""
    pid = int(PIDFILE.read_text())
    result: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/net/ip_vs").read_text().splitlines():
        words = line.split()
        if words[:1] == ["->"] and ":" in words[1] and words[1] != "RemoteAddress:Port":
            address = ipaddress.ip_address(int(words[1].split(":")[0], 16))
            result[str(address)] = int(words[3])
    return result


def gone(pid: int) -> bool:
    """Ended (a zombie counts: whoever reaps it in the VM is no concern of the test)."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def healths() -> dict[str, str]:
    if not HEALTH_FILE.exists():
        return {}
    data = json.loads(HEALTH_FILE.read_text())
    return {t["address"]: t["state"] for t in data["health"]["targets"]}


@pytest.fixture
def watched(fresh: None, configs: Path) -> Iterator[dict[str, str]]:
    config = write_config(configs / "lvs.toml")
    config.write_text(config.read_text() + f"""
[service.check]
type = "http"
interval = {INTERVAL}
timeout = {TIMEOUT}
rise = {RISE}
fall = {FALL}
""")
    realservers_by_hand(REALS)
    started = initd("director", "start", config=config)
    assert started.returncode == 0, started
    env = {**lvs_env("director", config), "LVS_DIRECTOR_BIN": str(VENV_BIN / "lvs-director"),
           "LVS_WATCH_PIDFILE": str(PIDFILE)}
    watch = run_on("director", [str(WATCH_INITD), "start"], env)
    assert watch.returncode == 0, watch
    try:
        wait_for(lambda: set(healths().values()) == {"up"} and len(healths()) == 4, 180,
                 what="every real server checked up")
        yield env
    finally:
        run_on("director", [str(WATCH_INITD), "stop"], env)
        if httpd_pid("rs2") is None:
            start_httpd("rs2")


def test_rs2_stops_then_starts_again(watched: dict[str, str]) -> None:
    assert weight_of("rs2") == WEIGHTS["rs2"]
    pid = httpd_pid("rs2")
    assert pid is not None
    failed_at = time.monotonic()
    failed_wall = time.time()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: weight_of("rs2") == 0, 60, interval=0.02, what="rs2 at weight 0")
    out = time.monotonic() - failed_at
    data = json.loads(HEALTH_FILE.read_text())["health"]["targets"]
    detected = next(t["since"] for t in data if t["address"] == REALS["rs2"]) - failed_wall
    print(f"\nlab: rs2 judged down {detected:.1f} s after its web server stopped")
    print(f"lab: rs2's web server stopped -> weight 0 after {out:.1f} s "
          f"(bound {BOUND} s: interval {INTERVAL} x fall {FALL} + timeout {TIMEOUT} + 1)")
    answers = curl_vip(20)
    assert len(answers) == 20, answers  # every request answered ...
    assert "rs2" not in answers, answers  # ... and none sent to the dead server
    start_httpd("rs2")
    back_at = time.monotonic()
    wait_for(lambda: weight_of("rs2") == WEIGHTS["rs2"], 60, interval=0.02,
             what="rs2 back at its weight")
    back = time.monotonic() - back_at
    print(f"lab: rs2's web server started -> weight {WEIGHTS['rs2']} after {back:.1f} s "
          f"(rise {RISE} x interval {INTERVAL})")
    assert out <= BOUND, f"rs2 out after {out:.1f} s, more than {BOUND} s"
    assert back <= INTERVAL * RISE + TIMEOUT + 1, f"rs2 back after {back:.1f} s"


def test_rs2_stays_out_across_reload_and_a_new_watcher(watched: dict[str, str]) -> None:
    """Scenario 5: while rs2 is down, a reload keeps it at 0; so do a kill -9 of the
    watcher and a new one (which starts from the saved health: rs2 is down, not unknown);
    it comes back only once its web server answers again."""
    pid = httpd_pid("rs2")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: weight_of("rs2") == 0, 60, interval=0.02, what="rs2 at weight 0")
    reloaded = initd("director", "reload", config=Path(watched["LVS_CONFIG"]))
    assert reloaded.returncode == 0, reloaded
    assert weight_of("rs2") == 0
    killed = int(PIDFILE.read_text())
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: gone(killed), 30, interval=0.05, what="the watcher gone")
    saved = HEALTH_FILE.stat().st_mtime_ns
    again = run_on("director", [str(WATCH_INITD), "start"], watched)
    assert again.returncode == 0, again
    # its first apply (before READY) rewrites the health file
    wait_for(lambda: HEALTH_FILE.stat().st_mtime_ns != saved, 120, interval=0.1,
             what="the new watcher's first apply")
    assert weight_of("rs2") == 0
    start_httpd("rs2")
    wait_for(lambda: weight_of("rs2") == WEIGHTS["rs2"], 120, interval=0.1,
             what="rs2 back at its weight")
    assert all(weight_of(name) == weight for name, weight in WEIGHTS.items())
