"""lvs-director watch on the real kernel: issue 10's lab scenarios 1 and 2.

The director is started through init.d/lvs-director and the watcher through
init.d/lvs-director-watch, from one config with an http check (interval 2, timeout 1,
rise 2, fall 2). rs2's web server (busybox httpd) is stopped: rs2 must be at weight 0
within interval * fall + timeout + 1 s, and the client's requests must all be answered,
none by rs2; started again, rs2 must be back at its weight after `rise` checks.
The measured times are printed (`-s`) for the README.
"""

from __future__ import annotations

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
    ipvs_save,
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
    for line in ipvs_save():
        words = line.split()
        if words[:1] == ["-a"] and words[4] == f"{REALS[name]}:80":
            return int(words[words.index("-w") + 1])
    return None


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
           "LVS_WATCH_PIDFILE": str(RUN_ROOT / "director" / "watch.pid")}
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
    os.kill(pid, signal.SIGTERM)
    failed_at = time.monotonic()
    wait_for(lambda: weight_of("rs2") == 0, 60, interval=0.2, what="rs2 at weight 0")
    out = time.monotonic() - failed_at
    print(f"\nlab: rs2's web server stopped -> weight 0 after {out:.1f} s "
          f"(bound {BOUND} s: interval {INTERVAL} x fall {FALL} + timeout {TIMEOUT} + 1)")
    answers = curl_vip(20)
    assert len(answers) == 20, answers  # every request answered ...
    assert "rs2" not in answers, answers  # ... and none sent to the dead server
    start_httpd("rs2")
    back_at = time.monotonic()
    wait_for(lambda: weight_of("rs2") == WEIGHTS["rs2"], 60, interval=0.2,
             what="rs2 back at its weight")
    back = time.monotonic() - back_at
    print(f"lab: rs2's web server started -> weight {WEIGHTS['rs2']} after {back:.1f} s "
          f"(rise {RISE} x interval {INTERVAL})")
    assert out <= BOUND, f"rs2 out after {out:.1f} s, more than {BOUND} s"
    assert back <= INTERVAL * RISE + TIMEOUT + 1, f"rs2 back after {back:.1f} s"
