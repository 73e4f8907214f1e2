"""Fixtures of the lab tests: the topology, built once, and a clean slate for each test.

Only ever active inside the lab VM (`python -m lab pytest`): every test module here is
marked `lab` and skipped unless LVS_LAB=1 and the kernel has IPVS.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import labhosts


@pytest.fixture(autouse=True)
def real_tool_guard() -> Iterator[None]:
    """Replaces tests/conftest.py's guard: these tests run the real ipvsadm, ip, sysctl and
    arping on purpose, inside the VM's namespaces (the modules are skipped anywhere else)."""
    yield None


@pytest.fixture(scope="session")
def topology() -> Iterator[None]:
    """lab/topology.sh up 4: client, router, director, rs1..rs4, web servers. Once."""
    if not labhosts.IN_LAB:  # belt and braces: the modules' skip marks come first
        pytest.skip("not in the lab VM")
    subprocess.run(["bash", str(labhosts.TOPOLOGY), "up", "4"], check=True, timeout=120)
    try:
        yield
    finally:
        labhosts.reset()
        subprocess.run(["bash", str(labhosts.TOPOLOGY), "down"], check=True, timeout=120)


@pytest.fixture
def fresh(topology: None) -> None:
    """No LVS set-up anywhere, whatever the test before left behind."""
    labhosts.reset()


@pytest.fixture
def holder(topology: None) -> Iterator[labhosts.Holder]:
    client = labhosts.Holder()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """Where a test writes its config variants (the guest's /tmp, an overlay: never the host)."""
    return tmp_path
