"""A step that fails half-way through start, on the real kernel.

1. A real refusal: the wrr scheduler module is unloaded, so the kernel refuses
   `ipvsadm -A ... -s wrr` ("Scheduler or persistence engine not found"). The VIP and
   the timeouts were applied by then. Then stop must leave the host as it was.
2. A refusal in the middle of the `ipvsadm -R` batch: a wrapper `ipvsadm` first on PATH
   lets every rule through but the one for rs4, which it refuses twice (in the batch,
   and when lvs-director re-runs that rule alone to get its error message), as a kernel
   short of memory would. The rules before it did reach the kernel. Then start again
   (the fault gone) must finish the job, and stop leave the host as it was.

Both: exit 1 naming the command, and a state file that says exactly what is in the
kernel. Every CLI call costs seconds in the VM: scenario 2 runs once, for two tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.labhosts import (
    GATEWAY,
    LAB_ONLY,
    REALS,
    VIP,
    Done,
    changing,
    expected_save,
    initd,
    ipvs_save,
    lock_file,
    mac_of,
    neighbour_mac,
    read_state,
    reset,
    snapshot,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

OURS = f"tcp {VIP}:80"


def wrr_module() -> Path:
    modules = os.environ.get("LAB_MODULES")
    if not modules or not (Path(modules) / "ip_vs_wrr.ko").exists():
        pytest.skip("LAB_MODULES (set by python -m lab) does not hold ip_vs_wrr.ko")
    return Path(modules) / "ip_vs_wrr.ko"


def test_kernel_refuses_the_scheduler_then_stop_puts_the_host_back(fresh: None) -> None:
    module = wrr_module()
    before = snapshot("director")
    subprocess.run(["rmmod", "ip_vs_wrr"], check=True)
    try:
        failed = initd("director", "start")
    finally:
        subprocess.run(["insmod", str(module)], check=True)
    # LSB 5, like a missing program: the kernel has no module for the scheduler.
    assert failed.returncode == 5, failed
    assert f"`ipvsadm -A -t {VIP}:80 -s wrr`: the kernel said" in failed.stderr, failed
    assert "Scheduler or persistence engine not found" in failed.stderr, failed
    # The state file records what was applied: the timeouts (with the kernel's before),
    # the VIP (not announced: arping comes last), and no service (there is none).
    assert read_state("director") == {
        "addresses": [{"device": "eth0", "cidr": f"{VIP}/32", "purpose": "vip",
                       "announced": False}],
        "route": None, "services": [], "sysctls": [],
        "timeouts": {"previous": [900, 120, 300], "value": [30, 5, 60]},
        "files": [], "keepalived": None, "sync_daemons": [], "bird": None, "nft_tables": [],
        "links": [], "fous": [], "version": 5}
    assert ipvs_save() == []

    stopped = initd("director", "stop")
    assert stopped.returncode == 0, stopped
    assert snapshot("director") == before
    assert read_state("director") is None
    assert not lock_file("director").exists()


@dataclass
class BatchFault:
    before: str  # snapshot of the director before start
    failed: Done  # start, rs4's rule refused
    refusals: int  # how often the wrapper refused it
    save_failed: list[str]
    state_failed: dict[str, object] | None
    again: Done  # start -v, the fault gone
    save_again: list[str]
    router_mac: str | None  # the router's ARP entry for the VIP after that start
    stopped: Done
    after_stop: str


WRAPPER = """#!/bin/bash
# Refuses the rules for {refused} twice (-R batch, then alone); everything else goes
# through to the real ipvsadm.
count=$(cat {counter} 2>/dev/null || echo 0)
if [ "$count" -lt 2 ]; then
    if [ "$1" = -R ]; then
        input=$(cat)
        if grep -q '{refused}:' <<<"$input"; then
            echo $((count + 1)) > {counter}
            grep -v '{refused}:' <<<"$input" | {real} -R
            echo "Memory allocation problem (injected by the lab test)" >&2
            exit 1
        fi
        printf '%s\\n' "$input" | exec {real} -R
    fi
    if [ "$1" = -a ] && [[ " $* " == *" {refused}:"* ]]; then
        echo $((count + 1)) > {counter}
        echo "Memory allocation problem (injected by the lab test)" >&2
        exit 1
    fi
fi
exec {real} "$@"
"""


@pytest.fixture(scope="module")
def batch_fault(topology: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchFault]:
    reset()
    folder = tmp_path_factory.mktemp("fault")
    counter = folder / "refused"
    wrapper = folder / "bin" / "ipvsadm"
    wrapper.parent.mkdir()
    wrapper.write_text(WRAPPER.format(refused=REALS["rs4"], counter=counter,
                                      real=shutil.which("ipvsadm")))
    wrapper.chmod(0o755)
    before = snapshot("director")
    failed = initd("director", "start", path_prefix=str(wrapper.parent))
    refusals = int(counter.read_text()) if counter.exists() else 0
    save_failed, state_failed = ipvs_save(), read_state("director")
    again = initd("director", "start", "-v")
    save_again, router_mac = ipvs_save(), neighbour_mac("router", VIP)
    stopped = initd("director", "stop")
    yield BatchFault(before, failed, refusals, save_failed, state_failed, again, save_again,
                     router_mac, stopped, snapshot("director"))
    reset()


def test_a_rule_refused_in_the_batch_then_start_again_and_stop(batch_fault: BatchFault) -> None:
    run = batch_fault
    refused = REALS["rs4"]
    assert run.failed.returncode == 1, run.failed
    assert f"`ipvsadm -a -t {VIP}:80 -r {refused}:80 -g -w 2` exited 1" in run.failed.stderr
    assert run.refusals == 2
    # The kernel has the service and three of its real servers: the state file must say
    # that the service (and the VIP) are ours, or nothing would ever finish or undo them.
    assert run.save_failed == expected_save(("rs1", "rs2", "rs3"))
    assert run.state_failed is not None, run.failed
    assert [f"{s['protocol']} {s['address']}:{s['port']}"
            for s in run.state_failed["services"]] == [OURS], run.state_failed
    assert run.state_failed["addresses"] == [{  # not announced: arping never ran
        "device": "eth0", "cidr": f"{VIP}/32", "purpose": "vip", "announced": False}
    ], run.state_failed
    # Start again applies what is missing, and only that: rs4's rule and the announcement
    # of the VIP that the failed start added.
    assert run.again.returncode == 0, run.again
    rule = f"ipvsadm -a -t {VIP}:80 -r {refused}:80 -g -w 2"
    announce = f"arping -c 2 -I eth0 -s {VIP} {GATEWAY}"
    assert sorted(changing(run.again.ran())) == sorted([rule, announce]), run.again
    assert run.save_again == expected_save()
    # stop: the host as before start, IPVS timeouts included.
    assert run.stopped.returncode == 0, run.stopped
    assert run.after_stop == run.before


def test_start_after_a_failure_announces_the_vip_the_failed_start_added(
        batch_fault: BatchFault) -> None:
    """The failed start added the VIP but never reached its arping; the start that
    finishes the job must announce it, so the router learns the director's MAC."""
    run = batch_fault
    assert run.again.returncode == 0, run.again
    assert f"arping -c 2 -I eth0 -s {VIP} {GATEWAY}" in run.again.ran(), run.again
    assert run.router_mac == mac_of("director")
