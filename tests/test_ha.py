"""[ha]: the generated keepalived config (goldens for both directors), the notify hook,
and the HA planner as data: start, reload and stop of one director of a pair."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lvs_scripts.config import parse_config
from lvs_scripts.ha import (
    HaFiles,
    describe_ha,
    digest,
    keepalived_config,
    member_of,
    notify_script,
    parse_role,
    plan_ha_start,
)
from lvs_scripts.health import DOWN, UP, Health, TargetId
from lvs_scripts.healthstate import HealthView
from lvs_scripts.model import Config, HaDirector
from lvs_scripts.owned import (
    OwnedAddress,
    OwnedFile,
    OwnedKeepalived,
    OwnedService,
    OwnedSyncDaemon,
    plan_undo,
)
from lvs_scripts.plan import Plan
from lvs_scripts.probes import (
    HostObservation,
    KeepalivedSeen,
    SyncDaemon,
    parse_ipvs_save,
    parse_sync_daemons,
)
from lvs_scripts.state import State
from tests.hosts import addr_lines, host, link_lines

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "ha"
LAB_HA_TEXT = (ROOT / "examples" / "lab-ha.toml").read_text()
CONFIG = parse_config(LAB_HA_TEXT, "/etc/lvs/lvs.toml")
FILES = HaFiles("/run/lvs-scripts", "lvs-director")
LB1 = member_of(CONFIG, "lb1")
# The other corner: no preemption, an IPv6 VIP beside the IPv4 one.
VARIANT = parse_config(
    LAB_HA_TEXT.replace("preempt = true", "preempt = false")
    + '\n[[service]]\nvip = "2001:db8::254"\nport = 80\nreal = [{ address = "2001:db8::11" }]\n',
    "/etc/lvs/lvs.toml")


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDENS") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (UPDATE_GOLDENS=1 rewrites it)"


@pytest.mark.parametrize(("config", "name", "file"), [
    (CONFIG, "lb1", "lb1.keepalived.conf"), (CONFIG, "lb2", "lb2.keepalived.conf"),
    (VARIANT, "lb2", "lb2-nopreempt-ipv6.keepalived.conf")])
def test_keepalived_config_golden(config: Config, name: str, file: str) -> None:
    golden(file, keepalived_config(config, member_of(config, name), FILES))


def test_each_director_peers_with_the_other_and_keeps_its_priority() -> None:
    lb1 = keepalived_config(CONFIG, LB1, FILES)
    lb2 = keepalived_config(CONFIG, member_of(CONFIG, "lb2"), FILES)
    assert "unicast_src_ip 192.168.30.105" in lb1 and "        192.168.30.106\n" in lb1
    assert "unicast_src_ip 192.168.30.106" in lb2 and "        192.168.30.105\n" in lb2
    assert "priority 150" in lb1 and "priority 100" in lb2
    assert "nopreempt" not in lb1 and "nopreempt" in keepalived_config(
        VARIANT, LB1, FILES)


def test_notify_hook_golden() -> None:
    golden("ha-notify", notify_script(FILES))


def test_role_file_is_read_strictly() -> None:
    assert parse_role("MASTER\n") == "master"
    assert parse_role("FAULT") == "fault"
    assert parse_role("master") is None
    assert parse_role("MASTER; rm -rf /") is None


# --- ipvsadm -L --daemon -------------------------------------------------------------------

def test_sync_daemon_listing_of_ipvsadm_1_31_and_older() -> None:
    text = ("master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, "
            "port=8848, ttl=1)\nbackup sync daemon (mcast=eth1, syncid=7)\n")
    assert parse_sync_daemons(text) == {"master": SyncDaemon("master", "eth0", 51),
                                        "backup": SyncDaemon("backup", "eth1", 7)}
    assert parse_sync_daemons("") == {}


# --- the planner ------------------------------------------------------------------------------

SAVE = ("-A -t 192.168.30.254:80 -s wrr\n"
        "-a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1\n"
        "-a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 1\n"
        "-a -t 192.168.30.254:80 -r 192.168.30.113:80 -g -w 2\n"
        "-a -t 192.168.30.254:80 -r 192.168.30.114:80 -g -w 2\n")
DAEMONS = {"master": SyncDaemon("master", "eth0", 51), "backup": SyncDaemon("backup", "eth0", 51)}
CONF = FILES.config_file
NOTIFY = FILES.notify_script
CONF_DIGEST = digest(keepalived_config(CONFIG, LB1, FILES))
NOTIFY_DIGEST = digest(notify_script(FILES))
KEEPALIVED = OwnedKeepalived(CONF, FILES.pid_file, FILES.vrrp_pid_file,
                             (("eth0", "192.168.30.254/32"),))
HTTP = next(iter(parse_ipvs_save(SAVE)))
RUNNING = State.of(
    OwnedService(HTTP), KEEPALIVED, OwnedSyncDaemon(DAEMONS["master"]),
    OwnedSyncDaemon(DAEMONS["backup"]), OwnedFile(NOTIFY, NOTIFY_DIGEST),
    OwnedFile(CONF, CONF_DIGEST))
LINKS = link_lines("lo", "eth0")
BARE = addr_lines(("lo", "127.0.0.1/8"))
WITH_DIP = addr_lines(("lo", "127.0.0.1/8"), ("eth0", "192.168.30.105/24"))
MASTER = addr_lines(("lo", "127.0.0.1/8"), ("eth0", "192.168.30.105/24"),
                    ("eth0", "192.168.30.254/32"))
ROUTE = "default via 192.168.30.200 dev eth0"
TIMEOUTS = "Timeout (tcp tcpfin udp): 30 5 60\n"
START = f"keepalived -P -f {CONF} -p {FILES.pid_file} -r {FILES.vrrp_pid_file}"
INSTALL_NOTIFY = f"install -m 0755 /proc/self/fd/0 {NOTIFY}"
INSTALL_CONF = f"install -m 0644 /proc/self/fd/0 {CONF}"


def observed(addrs: str = WITH_DIP, ipvs: str = SAVE, daemons: dict[str, SyncDaemon] | None = None,
             files: dict[str, str] | None = None, keepalived: int | None = 4242
             ) -> HostObservation:
    obs = host(LINKS, addrs, routes=ROUTE, ipvs=ipvs, timeouts=TIMEOUTS)
    obs.sync_daemons = dict(DAEMONS if daemons is None else daemons)
    obs.files = {CONF: CONF_DIGEST, NOTIFY: NOTIFY_DIGEST} if files is None else files
    obs.keepalived = None if keepalived is None else KeepalivedSeen(keepalived, CONF)
    return obs


FULL_START = [
    "ip addr add 192.168.30.105/24 dev eth0",
    "ipvsadm -R",  # the table, in one batch (the lines are not the point here)
    "ipvsadm --start-daemon master --mcast-interface eth0 --syncid 51",
    "ipvsadm --start-daemon backup --mcast-interface eth0 --syncid 51",
    INSTALL_NOTIFY, INSTALL_CONF, START]

START_CASES = [
    pytest.param(observed(BARE, ipvs="", daemons={}, files={}, keepalived=None), State(),
                 FULL_START, id="bare-host"),
    pytest.param(observed(), RUNNING, [], id="running-backup-is-as-configured"),
    pytest.param(observed(MASTER), RUNNING, [], id="running-master-is-as-configured"),
    pytest.param(observed(ipvs=SAVE.replace("112:80 -g -w 1", "112:80 -g -w 5")), RUNNING,
                 ["ipvsadm -e -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 1"],
                 id="reload-touches-the-ipvs-table-only"),
    pytest.param(observed(files={CONF: "0" * 64, NOTIFY: NOTIFY_DIGEST}), RUNNING,
                 [INSTALL_CONF, "kill -HUP 4242"], id="changed-config-rewritten-and-hupped"),
    pytest.param(observed(keepalived=None), RUNNING, [START], id="keepalived-killed"),
    # kill -9 leaves the VIP where keepalived put it; the new keepalived removes it itself
    # as it starts (keepalived 2.2.7, seen in the lab): start only starts it.
    pytest.param(observed(MASTER, keepalived=None), RUNNING, [START],
                 id="killed-keepalived-left-its-vip-keepalived-removes-it"),
    pytest.param(observed(MASTER, ipvs="", daemons={}, files={}, keepalived=None), State(),
                 FULL_START[1:], id="a-vip-there-before-our-first-start-is-not-ours"),
    pytest.param(observed(daemons={"backup": DAEMONS["backup"]}), RUNNING,
                 ["ipvsadm --start-daemon master --mcast-interface eth0 --syncid 51"],
                 id="a-sync-daemon-gone"),
    pytest.param(observed(daemons={**DAEMONS, "master": SyncDaemon("master", "eth0", 9)}),
                 State.of(OwnedSyncDaemon(SyncDaemon("master", "eth0", 9))),
                 ["ipvsadm --stop-daemon master",
                  "ipvsadm --start-daemon master --mcast-interface eth0 --syncid 51"],
                 id="our-daemon-with-an-old-syncid-restarted"),
]


def lines(plan: Plan) -> list[str]:
    return ["ipvsadm -R" if s.ipvs_rule and s.argv[1] in ("-A", "-a") else s.line()
            for s in plan.steps if not (s.ipvs_rule and s.argv[1] == "-a")]


def test_the_record_keeps_the_vips_keepalived_adds_and_learns_them_on_reload() -> None:
    started = plan_ha_start(CONFIG, LB1, FILES, observed(BARE, ipvs="", daemons={}, files={},
                                                         keepalived=None), State())
    after = State()
    for step in started.steps:
        if step.effect is not None:
            step.effect.record(after)
    assert after.keepalived == KEEPALIVED
    # A record from before state version 5 (no VIPs) learns them, with no command run.
    old = State.of(*[r for r in RUNNING.records() if r != KEEPALIVED],
                   OwnedKeepalived(CONF, FILES.pid_file, FILES.vrrp_pid_file))
    plan = plan_ha_start(CONFIG, LB1, FILES, observed(), old)
    assert lines(plan) == []
    for effect in plan.forget:
        effect.record(old)
    assert old.keepalived == KEEPALIVED
    # A changed config: the HUP step carries the new VIPs into the record.
    changed = observed(files={CONF: "0" * 64, NOTIFY: NOTIFY_DIGEST})
    hupped = plan_ha_start(VARIANT, member_of(VARIANT, "lb1"), FILES, changed, RUNNING)
    hup = next(s for s in hupped.steps if s.argv[:2] == ("kill", "-HUP"))
    assert hup.effect is not None
    state = State.from_json(RUNNING.to_json(), "copy")
    hup.effect.record(state)
    assert state.keepalived is not None and state.keepalived.addresses == (
        ("eth0", "192.168.30.254/32"), ("eth0", "2001:db8::254/128"))


@pytest.mark.parametrize(("obs", "state", "expected"), START_CASES)
def test_ha_start_plan(obs: HostObservation, state: State, expected: list[str]) -> None:
    plan = plan_ha_start(CONFIG, LB1, FILES, obs, state)
    assert lines(plan) == expected
    assert not plan.conflicts


def test_ha_start_never_adds_or_announces_the_vips() -> None:
    plan = plan_ha_start(CONFIG, LB1, FILES, observed(BARE, ipvs="", daemons={}, files={},
                                                      keepalived=None), State())
    assert not any("192.168.30.254/32" in s.line() or s.argv[0] == "arping"
                   for s in plan.steps)


def test_written_files_carry_their_text_and_keepalived_waits_for_its_pid_file() -> None:
    plan = plan_ha_start(CONFIG, LB1, FILES, observed(files={}, keepalived=None), RUNNING)
    by_line = {s.line(): s for s in plan.steps}
    assert by_line[INSTALL_CONF].stdin == keepalived_config(CONFIG, LB1, FILES)
    settle = by_line[START].settle
    assert settle is not None and settle.pid_file == FILES.pid_file


def test_a_sync_daemon_someone_else_started_is_a_conflict_left_alone() -> None:
    foreign = {**DAEMONS, "backup": SyncDaemon("backup", "eth0", 3)}
    plan = plan_ha_start(CONFIG, LB1, FILES, observed(daemons=foreign), RUNNING)
    assert lines(plan) == []
    assert "did not start" in plan.conflicts[0] and "syncid 3" in plan.conflicts[0]


STOP_CASES = [
    pytest.param(observed(MASTER), State.of(*RUNNING.records(),
                                            OwnedAddress("eth0", "192.168.30.105/24", "dip")),
                 ["kill -TERM 4242", "ipvsadm --stop-daemon master",
                  "ipvsadm --stop-daemon backup", "ipvsadm -D -t 192.168.30.254:80",
                  "ip addr del 192.168.30.105/24 dev eth0", f"rm -f {NOTIFY}", f"rm -f {CONF}"],
                 id="master-stops-keepalived-first"),
    pytest.param(observed(keepalived=None, daemons={}, files={}, ipvs=""), RUNNING, [],
                 id="all-gone-already-records-dropped"),
    # kill -9 (or a crash) left keepalived's VIP here, while the peer holds it too.
    pytest.param(observed(MASTER, keepalived=None, daemons={}, files={}, ipvs=""), RUNNING,
                 ["ip addr del 192.168.30.254/32 dev eth0"],
                 id="a-dead-keepalived-left-its-vip-stop-removes-it"),
    pytest.param(observed(daemons={"master": SyncDaemon("master", "eth1", 51)},
                          files={CONF: "1" * 64, NOTIFY: NOTIFY_DIGEST}), RUNNING,
                 ["kill -TERM 4242", "ipvsadm -D -t 192.168.30.254:80", f"rm -f {NOTIFY}"],
                 id="changed-by-others-left-alone"),
]


@pytest.mark.parametrize(("obs", "state", "expected"), STOP_CASES)
def test_ha_stop_plan(obs: HostObservation, state: State, expected: list[str]) -> None:
    plan = Plan()
    plan_undo(plan, obs, state)
    assert [s.line() for s in plan.steps] == expected
    after = State.from_json(state.to_json(), "copy")
    for effect in [s.effect for s in plan.steps if s.effect] + plan.forget:
        effect.record(after)
    assert after.empty()


def test_stop_waits_until_keepalived_has_gone() -> None:
    plan = Plan()
    plan_undo(plan, observed(), RUNNING)
    settle = plan.steps[0].settle
    assert settle is not None and settle.gone_pid == 4242


def test_a_keepalived_we_did_not_start_is_never_signalled() -> None:
    """Its pid file is not ours, or names a process without our config: not observed as
    ours, so stop only drops the record."""
    plan = Plan()
    obs = observed()
    obs.keepalived = KeepalivedSeen(4242, "/etc/keepalived/keepalived.conf")
    plan_undo(plan, obs, State.of(KEEPALIVED))
    assert plan.steps == []


def test_status_of_a_backup_and_of_a_master() -> None:
    obs = observed()
    obs.ha_role = "backup"
    lines_, data = describe_ha(CONFIG, LB1, obs)
    assert data == {"host": "lb1", "priority": 150, "role": "backup", "keepalived": True,
                    "sync_daemons": {"master": True, "backup": True}, "vips_held": [],
                    "holds_vips": False}
    assert "role backup" in lines_[0]
    obs = observed(MASTER, keepalived=None)
    obs.ha_role = "master"  # a stale record: keepalived is not running
    _, data = describe_ha(CONFIG, LB1, obs)
    assert (data["role"], data["keepalived"], data["holds_vips"]) == (None, False, True)


# --- health on a pair: each director's watcher, the one planner ---------------------------
# The watcher runs on both directors and writes its own health file; start and reload
# (plan_ha_start, through Director.plan_start) read it there. A server found down must
# stay at weight 0 on the backup as on the master, so that the table the backup takes
# over with is already without it, and a reload on either never puts it back.

CHECKED = parse_config(LAB_HA_TEXT + '\n[service.check]\ntype = "tcp"\n', "/etc/lvs/lvs.toml")
RS2 = TargetId("tcp", "192.168.30.254", 80, "192.168.30.112", 80)
RS2_DOWN = HealthView(health={RS2: Health(DOWN, 0, 3, "connection refused", 1.0)})
RS2_UP = HealthView(health={RS2: Health(UP, 2, 0, "ok", 2.0)})
RS2_EDIT = "ipvsadm -e -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w {}"


def pair_member(name: str, weight2: int | None) -> tuple[HaDirector, HostObservation, State]:
    """lb1 as master (it holds the VIP) or lb2 as backup, each running as configured
    with rs2 at weight2 in its table (None: a bare host, nothing started)."""
    member = member_of(CHECKED, name)
    dip = str(member.dip)
    if weight2 is None:
        obs = observed(addr_lines(("lo", "127.0.0.1/8")), ipvs="", daemons={}, files={},
                       keepalived=None)
        return member, obs, State()
    text = keepalived_config(CHECKED, member, FILES)
    addrs = [("lo", "127.0.0.1/8"), ("eth0", dip)]
    if name == "lb1":
        addrs.append(("eth0", "192.168.30.254/32"))
    obs = observed(addr_lines(*addrs), ipvs=SAVE.replace("112:80 -g -w 1",
                                                         f"112:80 -g -w {weight2}"),
                   files={CONF: digest(text), NOTIFY: NOTIFY_DIGEST})
    state = State.of(*[r for r in RUNNING.records() if not isinstance(r, OwnedFile)],
                     OwnedFile(NOTIFY, NOTIFY_DIGEST), OwnedFile(CONF, digest(text)),
                     OwnedAddress("eth0", dip, "dip"))
    return member, obs, state


HEALTH_CASES = [
    pytest.param(1, RS2_DOWN, [RS2_EDIT.format(0)], id="found-down-set-to-0"),
    pytest.param(0, RS2_DOWN, [], id="down-at-0-is-as-configured-reload-keeps-it"),
    pytest.param(0, RS2_UP, [RS2_EDIT.format(1)], id="up-again-back-to-its-weight"),
    pytest.param(0, HealthView(), [RS2_EDIT.format(1)], id="no-health-file-configured-weight"),
]


@pytest.mark.parametrize("name", ["lb1", "lb2"])
@pytest.mark.parametrize(("weight2", "view", "expected"), HEALTH_CASES)
def test_ha_start_and_reload_follow_this_directors_health(
        name: str, weight2: int, view: HealthView, expected: list[str]) -> None:
    member, obs, state = pair_member(name, weight2)
    plan = plan_ha_start(CHECKED, member, FILES, obs, state, view=view)
    assert [s.line() for s in plan.steps] == expected
    assert not plan.conflicts


@pytest.mark.parametrize("name", ["lb1", "lb2"])
def test_ha_start_on_a_bare_director_adds_a_down_server_at_weight_0(name: str) -> None:
    member, obs, state = pair_member(name, None)
    plan = plan_ha_start(CHECKED, member, FILES, obs, state, view=RS2_DOWN)
    rules = [s.line() for s in plan.steps if s.ipvs_rule and s.argv[1] == "-a"]
    assert "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.112:80 -g -w 0" in rules, rules
    assert "ipvsadm -a -t 192.168.30.254:80 -r 192.168.30.111:80 -g -w 1" in rules, rules
