"""A write-ahead record goes back when its command is refused, whatever the refusal: the
state file must never list what the host does not have (found in the lab: the kernel
lacking a scheduler module left the service on record)."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address

import pytest

from lvs_scripts.apply import apply_plan
from lvs_scripts.errors import (
    ApplyFailed,
    CommandFailed,
    IpvsDenied,
    KernelLacks,
    LvsError,
    MissingTool,
)
from lvs_scripts.model import Protocol, ServiceKey
from lvs_scripts.owned import ServiceCreated
from lvs_scripts.plan import Plan
from lvs_scripts.runner import Result
from lvs_scripts.state import State

KEY = ServiceKey(Protocol.TCP, ip_address("192.168.30.254"), 80)
ARGV = ("ipvsadm", "-A", "-t", "192.168.30.254:80", "-s", "wrr")


class Refusing:
    def __init__(self, error: LvsError) -> None:
        self.error = error

    def run(self, argv: Sequence[str], stdin: str | None = None,
            check: bool = True) -> Result:
        raise self.error


@pytest.mark.parametrize("error", [
    CommandFailed(ARGV, 2, "Memory allocation problem"),
    MissingTool("ipvsadm"),
    IpvsDenied(ARGV, "Permission denied (you must be root)"),
    KernelLacks("the kernel said \"Scheduler or persistence engine not found\""),
], ids=["failed", "missing", "denied", "kernel-lacks"])
def test_a_refused_step_leaves_no_record_of_its_effect(error: LvsError) -> None:
    plan = Plan()
    plan.add(ARGV, "virtual service", ServiceCreated(KEY, 5))
    state = State()
    saved: list[bool] = []
    with pytest.raises(ApplyFailed) as caught:
        apply_plan(plan, Refusing(error), state,  # type: ignore[arg-type]
                   lambda s: saved.append(s.owns_service(KEY)))
    assert caught.value.cause is error
    assert not state.owns_service(KEY)
    assert saved[0] is True and saved[-1] is False  # written ahead, then taken back
