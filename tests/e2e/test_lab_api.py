"""The Python API (`from lvs_scripts import load_config, Director, RealServer`) driving a
director and two real servers, each in its namespace: the init.d checks in miniature.

tests/e2e/api_driver.py runs on each host (start, status, start again), waits while
this test sends traffic and looks at the kernel, then stops on request.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.labhosts import (
    API_DRIVER,
    ARP_KEYS,
    LAB_ONLY,
    RUN_ROOT,
    VENV_BIN,
    VIP,
    addresses,
    curl_vip,
    expected_save,
    in_ns,
    ipvs_save,
    link_flags,
    mac_of,
    neighbour_mac,
    role_of,
    service_lines,
    sh,
    stats,
    sysctls,
    write_config,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

HOSTS = ("director", "rs1", "rs2")
REALS = ("rs1", "rs2")
WEIGHTS = {"rs1": 1, "rs2": 2}
PREVIOUS = dict(zip(ARP_KEYS, (0, 1, 2, 1)))
# eth0's arp_ignore=2 is stricter than 1 and keeps ARP as quiet: start leaves it so.
STARTED = dict(zip(ARP_KEYS, (1, 2, 2, 2)))
CHANGED = {key: value for key, value in PREVIOUS.items() if STARTED[key] != value}


@pytest.fixture
def drivers(fresh: None, configs: Path) -> Iterator[dict[str, subprocess.Popen[str]]]:
    config = write_config(configs / "api.toml", reals=REALS, weights=WEIGHTS)
    for host in REALS:  # what stop must put back: neither the default nor what start sets
        sh(host, "sysctl -q -w " + " ".join(f"{k}={v}" for k, v in PREVIOUS.items()))
    procs = {host: subprocess.Popen(
        in_ns(host, [str(VENV_BIN / "python"), str(API_DRIVER), role_of(host), str(config),
                     str(RUN_ROOT / host / "state"), str(RUN_ROOT / host / "lock")]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for host in HOSTS}
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def answer(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"api_driver.py ended (exit {proc.returncode}):\n{err}")
    return dict(json.loads(line))


def test_director_and_real_servers_through_the_python_api(
        drivers: dict[str, subprocess.Popen[str]]) -> None:
    started = {host: answer(proc) for host, proc in drivers.items()}
    for host, report in started.items():
        assert report["first_changed"] is True, (host, report)
        assert report["status"] == 0, (host, report)
        # Idempotent: the second start planned nothing, ran nothing, changed nothing.
        assert report["second_changed"] is False and report["second_steps"] == [], report
        assert report["unchanged"] is True, (host, report)
    assert service_lines(ipvs_save()) == expected_save(REALS, WEIGHTS)

    # Traffic: 9 requests, weights 1:2 -> 3 and 6 (the tolerance: see test_lab_initd).
    answers = curl_vip(9)
    got = Counter(answers)
    assert len(answers) == 9 and set(got) == {"rs1", "rs2"}, answers
    assert abs(got["rs1"] - 3) <= 1 and abs(got["rs2"] - 6) <= 1, answers
    numbers = stats(conns=9)
    assert numbers[f"tcp {VIP}:80"].inpkts > 0
    assert all(n.outpkts == 0 for n in numbers.values()), numbers  # DR
    assert neighbour_mac("router", VIP) == mac_of("director")

    for host in REALS:
        assert f"{VIP}/32" in addresses(host, "lo")
        assert sysctls(host) == STARTED
        recorded = json.loads((RUN_ROOT / host / "state" / "lvs-realserver.json").read_text())
        assert {s["key"]: s["previous"] for s in recorded["sysctls"]} == CHANGED, recorded

    for proc in drivers.values():
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()
    stopped = {host: answer(proc) for host, proc in drivers.items()}
    for host, report in stopped.items():
        assert report["status"] == 3, (host, report)
        assert report["applied"], (host, report)
    assert service_lines(ipvs_save()) == []
    assert f"{VIP}/32" not in addresses("director", "eth0")
    for host in REALS:
        assert f"{VIP}/32" not in addresses(host, "lo")
        assert sysctls(host) == PREVIOUS, host
    for host in HOSTS:
        flags = link_flags(host)
        assert "UP" in flags["eth0"] and "UP" in flags["lo"], (host, flags)
