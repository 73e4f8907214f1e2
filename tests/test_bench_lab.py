"""bench/bench_lab.py's host-side parts: the three contenders are given the same table, and
the readings and formatting the lab run's rows are made of. The lab run itself only runs in
the VM (it refuses anywhere else, checked here too)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lvs_scripts.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def load_bench_lab() -> ModuleType:
    """bench/ is scripts, not a package: bench_lab imports its sibling `bench`."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_lab", BENCH / "bench_lab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_lab"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lab = load_bench_lab()


def ours_rules(text: str) -> set[tuple[str, str, int]]:
    """What lvs-director would put in the kernel, read by our own config loader."""
    config = parse_config(text)
    return {(f"{s.key.address}:{s.key.port}", f"{d.address}:{d.port}", d.weight)
            for s in config.services for d in s.destinations}


def keepalived_rules(text: str) -> set[tuple[str, str, int]]:
    """keepalived.conf's virtual_server / real_server / weight, by its block structure
    (each keyword and brace a word, as keepalived's own parser splits them)."""
    rules: set[tuple[str, str, int]] = set()
    words = text.split()
    stack: list[str] = []
    service = real = ""
    weight = 1
    for index, word in enumerate(words):
        if word == "{":
            stack.append(words[index - 3] if words[index - 3] in ("virtual_server",
                                                                   "real_server") else
                         words[index - 1])
        elif word == "}":
            block = stack.pop()
            if block == "real_server":
                rules.add((service, real, weight))
        elif word == "virtual_server":
            service = f"{words[index + 1]}:{words[index + 2]}"
        elif word == "real_server":
            real, weight = f"{words[index + 1]}:{words[index + 2]}", 1
        elif word == "weight" and stack[-1:] == ["real_server"]:
            weight = int(words[index + 1])
    assert not stack, "unbalanced braces"
    return rules


@pytest.fixture
def small_services(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The 100,000 shape (services of PER_SERVICE above SINGLE_MAX) at a size a test reads."""
    monkeypatch.setattr(lab, "SINGLE_MAX", 10)
    monkeypatch.setattr(lab, "PER_SERVICE", 4)
    services: list[object] = lab.bench_table(20)
    return services


@pytest.mark.parametrize("weights", [{}, {"10.100.0.10": 3, "10.100.0.20": 5}])
def test_every_contender_gets_the_same_table(small_services: list[object],
                                            weights: dict[str, int]) -> None:
    expected = lab.expected_rules(small_services, weights)
    assert len(expected) == 20
    assert len({service for service, _, _ in expected}) == 5
    assert ours_rules(lab.ours_config(small_services, weights)) == expected
    assert keepalived_rules(lab.keepalived_config(small_services, weights)) == expected
    if not weights:  # the seed's script has no weights of its own: all 1
        assert lab.save_rules("\n".join(lab.seed_lines(small_services))) == expected


def test_a_changed_weight_is_in_both_configs(small_services: list[object]) -> None:
    changed = {"10.100.0.7": 3}
    before = lab.expected_rules(small_services, {})
    after = lab.expected_rules(small_services, changed)
    assert before ^ after == {("10.200.0.2:80", "10.100.0.7:80", 1),
                              ("10.200.0.2:80", "10.100.0.7:80", 3)}
    assert ours_rules(lab.ours_config(small_services, changed)) == after
    assert keepalived_rules(lab.keepalived_config(small_services, changed)) == after


def test_our_config_has_a_check_the_watcher_runs(small_services: list[object]) -> None:
    config = parse_config(lab.ours_config(small_services, {}))
    assert {s.check.type if s.check else None for s in config.services} == {"tcp"}
    assert config.director is not None and config.director.interface == "bench0"


def test_keepalived_config_runs_no_vrrp_and_no_checker(small_services: list[object]) -> None:
    text = lab.keepalived_config(small_services, {})
    assert "vrrp_instance" not in text
    assert not re.search(r"\b(TCP|HTTP|SSL|MISC|DNS|BFD|FILE|SMTP|UDP|PING)_CHECK\b", text)


def test_the_table_shapes() -> None:
    one = lab.bench_table(1000)
    assert len(one) == 1 and len(one[0].reals) == 1000 and one[0].vip == "10.200.0.1"
    many = lab.bench_table(100_000)
    assert len(many) == 1000 and {len(s.reals) for s in many} == {100}
    addresses = [rip for s in many for rip in s.reals]
    assert len(set(addresses)) == 100_000 and len({s.vip for s in many}) == 1000
    assert addresses[-1] == "10.101.134.160"  # inside REAL_NET, 10.100.0.0/14
    with pytest.raises(ValueError, match="multiple of 100"):
        lab.bench_table(10_050)


def test_save_rules_reads_ipvsadm_save() -> None:
    text = ("-A -t 10.200.0.1:80 -s wrr\n"
            "-a -t 10.200.0.1:80 -r 10.100.0.1:80 -g -w 1\n"
            "-a -t 10.200.0.1:80 -r 10.100.0.2:80 -g -w 3\n"
            "-A -t 10.200.0.2:80 -s wrr\n")
    assert lab.save_rules(text) == {("10.200.0.1:80", "10.100.0.1:80", 1),
                                    ("10.200.0.1:80", "10.100.0.2:80", 3)}
    assert lab.save_rules("") == set()


def test_tasks_created_reads_proc_stat() -> None:
    stat = ("cpu  10 0 5 100 0 0 0 0 0 0\nintr 1 2 3\nctxt 999\nbtime 1700000000\n"
            "processes 4321\nprocs_running 1\nprocs_blocked 0\n")
    assert lab.tasks_created(stat) == 4321
    with pytest.raises(ValueError, match="processes"):
        lab.tasks_created("cpu 1 2 3\nprocs_running 1\n")


def test_tasks_created_on_this_machine_counts_a_process() -> None:
    before = lab.read_tasks()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert lab.read_tasks() - before >= 1


def test_vm_hwm() -> None:
    status = "Name:\tpython3\nVmPeak:\t  300000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n"
    assert lab.vm_hwm_kb(status) == 51234
    assert lab.vm_hwm_kb("Name:\tkthreadd\n") is None
    assert lab.hwm_of(os.getpid()) is not None


# /proc/net/ip_vs as Linux 6.1's ip_vs_info_seq_show() writes it
LISTING = b"".join(line + b"\n" for line in (
    b"IP Virtual Server version 1.2.1 (size=4096)",
    b"Prot LocalAddress:Port Scheduler Flags",
    b"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn",
    b"TCP  0AC80001:0050 wrr ",  # the kernel's trailing blanks kept
    b"  -> 0A640001:0050      Route   1      0          0         ",
    b"  -> 0A640002:0050      Route   3      0          0         ",
    b"TCP  0AC80002:0050 wrr ",
    b"  -> 0A640003:0050      Route   0      4          2         "))


def test_listing_readers() -> None:
    assert lab.hex_endpoint("10.100.0.2", 80) == b"0A640002:0050"
    assert lab.listed_reals(LISTING) == 3
    assert lab.listed_weight(LISTING, "10.100.0.1") == 1
    assert lab.listed_weight(LISTING, "10.100.0.2") == 3
    assert lab.listed_weight(LISTING, "10.100.0.3") == 0
    assert lab.listed_weight(LISTING, "10.100.0.4") is None
    assert lab.listed_weight(LISTING, "10.100.0.1", 81) is None
    assert lab.listed_reals(LISTING.split(b"TCP")[0]) == 0


def test_formatting() -> None:
    assert lab.ratio(1.0, 2.0) == "0.50"
    assert lab.ratio(3.0, 1.5) == "2.00"
    assert lab.ratio(None, 1.0) == lab.ratio(1.0, None) == lab.ratio(1.0, 0.0) == "-"
    assert lab.seconds(None) == "-" and lab.seconds(1.234) == "1.23"
    assert lab.megabytes(None) == "-" and lab.megabytes(51200) == "50"
    assert lab.projected(0.1, 10_001, 1000) == \
        "not run (projected 1,000 s from the 1,000 rate)"


def test_report_rows_take_keepalived_of_the_same_size_and_step(
        capsys: pytest.CaptureFixture[str]) -> None:
    report = lab.Report()
    report.add(lab.Row(1000, "start", "keepalived", 2.0, 3, None))
    report.add(lab.Row(10000, "start", "keepalived", 20.0, 3, None))
    report.add(lab.Row(1000, "reload 1 weight", "keepalived", 0.5, 1, None))
    line = report.add(lab.Row(1000, "start", "ours (CLI)", 3.0, 9, 51200))
    assert report.line(line) == "| 1,000 | start | ours (CLI) | 3.00 | 1.50 | 9 | 50 |  |"
    assert report.line(lab.Row(1000, "status", "ours (CLI)", 1.0)).split(" | ")[4] == "-"
    assert capsys.readouterr().out.count("\n") == 4  # each row printed as it comes


def test_wait_until_reports_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(lab, "POLL", 0.001)
    lab.wait_until(lambda: calls.append(1) or len(calls) == 3, 5, "three")
    assert len(calls) == 3
    with pytest.raises(lab.StepFailed, match="never: did not finish in 0 s"):
        lab.wait_until(lambda: False, 0.01, "never")


def test_refuses_to_run_outside_the_lab() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LVS_LAB"}
    done = subprocess.run([sys.executable, str(BENCH / "bench_lab.py"), "--sizes", "10"],
                          env=env, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode != 0
    assert "runs only inside the lab VM" in done.stderr
    assert done.stdout == ""  # nothing measured, nothing set up


def test_reload_lines_counts_the_watchers_done_and_failed_reloads(tmp_path: Path) -> None:
    log = tmp_path / "watch.log"
    log.write_bytes(b"lvs-director: watch: SIGHUP: config x reloaded: 3 real server(s) checked\n")
    assert lab.reload_lines(log) == 0
    with open(log, "ab") as out:
        out.write(b"lvs-director: watch: reload: 1 change(s) applied; done, with its check, "
                  b"0.50 s after the config was read\n"
                  b"lvs-director: watch: reload: lvs.toml: service[0].port: 0: bad\n")
    assert lab.reload_lines(log) == 2
