"""restart and reload through init.d, and the systemd units' exact command lines.

The director and rs1 go through the same sequence side by side: the units' ExecStart,
init.d reload, init.d restart, the units' ExecReload, the units' ExecStop. After each
step the kernel is checked directly. A service another tool added by hand (port 8080 on
the same VIP) must keep exactly its `ipvsadm -S -n` lines all along.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.labhosts import (
    ARP_KEYS,
    FOREIGN,
    LAB_ONLY,
    VIP,
    Done,
    add_foreign_service,
    addresses,
    expected_save,
    initd_argv,
    ipvs_save,
    lock_file,
    lvs_env,
    program_of,
    role_of,
    run_parallel,
    service_lines,
    sysctls,
    unit_command,
)

pytestmark = [pytest.mark.lab, LAB_ONLY]

HOSTS = ("director", "rs1")


def both(kind: str, action: str) -> dict[str, Done]:
    """The same action on the director and rs1 at once, through init.d or the unit."""
    calls = []
    for host in HOSTS:
        argv = (initd_argv(host, action) if kind == "init.d"
                else unit_command(role_of(host), action))
        calls.append((host, argv, lvs_env(host)))
    results = dict(zip(HOSTS, run_parallel(calls)))
    for done in results.values():
        assert done.returncode == 0, done
    return results


def assert_running() -> None:
    save = ipvs_save()
    assert service_lines(save) == expected_save()
    assert service_lines(save, 8080) == FOREIGN
    assert f"{VIP}/32" in addresses("director", "eth0")
    assert f"{VIP}/32" in addresses("rs1", "lo")
    assert sysctls("rs1") == dict(zip(ARP_KEYS, (1, 2, 1, 2)))
    for host in HOSTS:
        assert lock_file(host).exists(), host


def assert_stopped() -> None:
    save = ipvs_save()
    assert service_lines(save) == []
    assert service_lines(save, 8080) == FOREIGN
    assert f"{VIP}/32" not in addresses("director", "eth0")
    assert f"{VIP}/32" not in addresses("rs1", "lo")
    assert sysctls("rs1") == dict.fromkeys(ARP_KEYS, 0)
    for host in HOSTS:
        assert not lock_file(host).exists(), host


def said(done: Done) -> list[str]:
    """The summary lines: `lvs-director start: 3 change(s) applied`, `...: nothing to do`."""
    return re.findall(r"^lvs-\w+ \S+: .*$", done.stdout, re.MULTILINE)


def test_restart_and_reload_through_initd_and_systemd(fresh: None) -> None:
    add_foreign_service()

    for host, done in both("systemd", "ExecStart").items():
        assert said(done) and "change(s) applied" in said(done)[0], (host, done)
    assert_running()

    # Nothing changed since start: reload finds nothing to do.
    for host, done in both("init.d", "reload").items():
        assert said(done) == [f"{program_of(host)} reload: nothing to do"], done
    assert_running()

    # restart = stop (undoes start) then start (does it again): two summaries, both changing.
    for done in both("init.d", "restart").values():
        lines = said(done)
        assert len(lines) == 2 and "stop: " in lines[0] and "start: " in lines[1], done
        assert all("change(s) applied" in line for line in lines), done
    assert_running()

    for host, done in both("systemd", "ExecReload").items():
        assert said(done) == [f"{program_of(host)} reload: nothing to do"], done
    assert_running()

    for done in both("systemd", "ExecStop").values():
        assert "change(s) applied" in said(done)[0], done
    assert_stopped()
