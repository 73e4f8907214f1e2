"""Drive one host through the Python API: start, status, start again; then, on "stop" from
stdin, stop and status. One JSON line on stdout after each phase.

    ip netns exec HOST .venv/bin/python tests/e2e/api_driver.py ROLE CONFIG STATE_DIR LOCK_DIR

ROLE is director or realserver. One long-lived process per host: a Python start costs
seconds in the lab VM, so the test does its checks from outside while this one waits.
"""

from __future__ import annotations

import json
import subprocess
import sys

from lvs_scripts import Director, Paths, RealServer, load_config

# What start could change, read before and after the second start.
SNAPSHOT = "ipvsadm -S -n; ip -o addr show; sysctl net.ipv4.conf.all.arp_ignore " \
           "net.ipv4.conf.all.arp_announce net.ipv4.conf.eth0.arp_ignore " \
           "net.ipv4.conf.eth0.arp_announce"


def snapshot() -> str:
    return subprocess.run(["sh", "-c", SNAPSHOT], capture_output=True, text=True,
                          check=True).stdout


def main(role: str, config: str, state_dir: str, lock_dir: str) -> int:
    kind = Director if role == "director" else RealServer
    host = kind(load_config(config), paths=Paths(kind.name, state_dir, lock_dir))
    first = host.start()
    running = host.status()
    before = snapshot()
    second = host.start()
    print(json.dumps({
        "phase": "started",
        "first_changed": first.changed, "first_applied": first.outcome.applied,
        "status": running.code, "summary": running.summary,
        "second_changed": second.changed, "second_applied": second.outcome.applied,
        "second_steps": [step.line() for step in second.plan.steps],
        "unchanged": snapshot() == before,
    }), flush=True)
    if sys.stdin.readline().strip() != "stop":
        return 1
    stopped = host.stop()
    after = host.status()
    print(json.dumps({"phase": "stopped", "applied": stopped.outcome.applied,
                      "status": after.code, "summary": after.summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
