"""Benchmarks of lvs_scripts: they print figures; nothing here asserts a time.

    python bench/bench.py              # on any machine: planning and cold start
    python bench/bench.py --kernel     # inside the lab VM only (python -m lab run -- ...):
                                       # start with N real servers against a real IPVS
                                       # kernel, ours versus the original script's style

The host part never runs a real ip/ipvsadm/sysctl/arping: the cold-start runs use
the fake tools of tests/fakes. The kernel part refuses to run outside the lab.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lvs_scripts.config import load_config, parse_config  # noqa: E402
from lvs_scripts.model import Protocol, ServiceKey  # noqa: E402
from lvs_scripts.owned import OwnedService  # noqa: E402
from lvs_scripts.plan_director import plan_director_start  # noqa: E402
from lvs_scripts.probes import (  # noqa: E402
    HostObservation,
    forget_parsed,
    parse_ipvs_save,
)
from lvs_scripts.runner import PlumbumRunner, Result  # noqa: E402
from lvs_scripts.state import State  # noqa: E402

VIP = "10.200.0.1"


def owner() -> State:
    """The state after our own start: the service is ours."""
    import ipaddress

    return State.of(OwnedService(ServiceKey(Protocol.TCP, ipaddress.ip_address(VIP), 80)))


def reals(count: int) -> list[str]:
    base = ipaddress.ip_address("10.100.0.1")
    return [str(base + index) for index in range(count)]


def config_text(count: int, interface: str = "eth0") -> str:
    lines = [f'[director]\ninterface = "{interface}"\narping_count = 0\n',
             f'[[service]]\nvip = "{VIP}"\nport = 80\nscheduler = "wrr"\nreal = [']
    lines += [f'  {{ address = "{address}", weight = 1 }},' for address in reals(count)]
    lines.append("]\n")
    return "\n".join(lines)


def save_text(count: int, changed: int | None = None) -> str:
    lines = [f"-A -t {VIP}:80 -s wrr"]
    for index, address in enumerate(reals(count)):
        weight = 2 if index == changed else 1
        lines.append(f"-a -t {VIP}:80 -r {address}:80 -g -w {weight}")
    return "\n".join(lines) + "\n"


# The sizes of the host part: 1 service x N real servers, and 100,000 as 1,000 x 100 (the
# issue's shape: one service of 100,000 is not what anyone runs), on one VIP.
SIZES = (1000, 10000, 100000)


def layout(count: int) -> tuple[int, int]:
    """(services, real servers each) for a table of `count` real servers."""
    return (count // 100, 100) if count >= 100000 else (1, count)


def ports(services: int) -> list[int]:
    """The services' ports on the one VIP: 80, or 1000... for 1,000 services (one VIP
    keeps the comparison on IPVS; 1,000 VIPs would add 1,000 `ip addr add` to start)."""
    return [80] if services == 1 else list(range(1000, 1000 + services))


def multi_config_text(count: int, interface: str = "eth0", changed: int | None = None) -> str:
    """config_text for layout(count); `changed`: that real server has weight 3."""
    services, each = layout(count)
    addresses = reals(each)
    lines = [f'[director]\ninterface = "{interface}"\narping_count = 0\n']
    index = 0
    for port in ports(services):
        lines.append(f'[[service]]\nvip = "{VIP}"\nport = {port}\nscheduler = "wrr"\n'
                     "real = [")
        for address in addresses:
            weight = 3 if index == changed else 1
            lines.append(f'  {{ address = "{address}", weight = {weight} }},')
            index += 1
        lines.append("]\n")
    return "\n".join(lines)


def multi_save_text(count: int) -> str:
    """`ipvsadm -S -n` of multi_config_text(count) in place."""
    services, each = layout(count)
    addresses = reals(each)
    lines = []
    for port in ports(services):
        lines.append(f"-A -t {VIP}:{port} -s wrr")
        # a real server without a port listens on the service's
        lines += [f"-a -t {VIP}:{port} -r {address}:{port} -g -w 1" for address in addresses]
    return "\n".join(lines) + "\n"


def multi_list_text(count: int) -> str:
    """`ipvsadm -L -n` of the same table."""
    services, each = layout(count)
    lines = ["IP Virtual Server version 1.2.1 (size=4096)",
             "Prot LocalAddress:Port Scheduler Flags",
             "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]
    for port in ports(services):
        lines.append(f"TCP  {VIP}:{port} wrr")
        lines += [f"  -> {address}:{port}".ljust(34) + "Route   1      1          0"
                  for address in reals(each)]
    return "\n".join(lines) + "\n"


def owner_of(count: int) -> State:
    return State.of(*(OwnedService(ServiceKey(Protocol.TCP, ipaddress.ip_address(VIP), port))
                      for port in ports(layout(count)[0])))


def cold_parse(text: str) -> object:
    """parse_ipvs_save as a new process sees it: nothing remembered from the run before."""
    forget_parsed()
    return parse_ipvs_save(text)


def best_of(runs: int, func: object) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def table(title: str, header: Sequence[str], rows: list[Sequence[object]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


# --- planning ------------------------------------------------------------------------------

def bench_planning() -> None:
    rows: list[Sequence[object]] = []
    for count in (10, 1000, 10000):
        config = parse_config(config_text(count))
        text = save_text(count, changed=count // 2)
        parse_s = best_of(5, lambda text=text: cold_parse(text))
        obs = HostObservation(ipvs=parse_ipvs_save(text))
        state = owner()
        plan_s = best_of(5, lambda c=config, o=obs, s=state: plan_director_start(c, o, s))
        plan = plan_director_start(config, obs, state)
        rules = [step.line() for step in plan.steps if step.ipvs_rule]
        rows.append((count, f"{parse_s * 1000:.1f}", f"{plan_s * 1000:.1f}", len(rules),
                     rules[0] if len(rules) == 1 else rules[:2]))
    table("reload where one weight changed (parse `ipvsadm -S -n`, then plan; best of 5)",
          ("real servers", "parse ms", "plan ms", "rules planned", "the rule"), rows)


def list_text(count: int) -> str:
    """`ipvsadm -L -n` for the table of save_text(count), one connection on each."""
    lines = ["IP Virtual Server version 1.2.1 (size=4096)",
             "Prot LocalAddress:Port Scheduler Flags",
             "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
             f"TCP  {VIP}:80 wrr"]
    lines += [f"  -> {address}:80".ljust(34) + "Route   1      1          0"
              for address in reals(count)]
    return "\n".join(lines) + "\n"


class ListRunner:
    """Answers `ipvsadm -L -n` only: what status runs besides its observation."""

    def __init__(self, text: str) -> None:
        self.text = text

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result:
        return Result(tuple(argv), 0, self.text, "")


def bench_start_python() -> None:
    """What a start of N real servers costs us apart from the programs it runs: read the
    config, plan against an empty host, check the observed table after the batch; and the
    report of status on the running table (observe: parse `ipvsadm -S -n`; plan; describe
    with `ipvsadm -L -n`). Each must grow linearly with N (a quadratic step shows as x100
    per row, not x10)."""
    from lvs_scripts.apply import units
    from lvs_scripts.director import Director
    from lvs_scripts.probes import rules_held

    rows: list[Sequence[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in SIZES:
            runs = 3 if count <= 10000 else 1
            path = Path(tmp) / f"lvs-{count}.toml"
            path.write_text(multi_config_text(count))
            load_s = best_of(runs, lambda p=path: load_config(str(p)))
            config = load_config(str(path))
            plan_s = best_of(runs, lambda c=config: plan_director_start(c, HostObservation(),
                                                                           State()))
            plan = plan_director_start(config, HostObservation(), State())
            rules = [step.ipvs_rule for step in plan.steps if step.ipvs_rule]
            # what apply does after `ipvsadm -R`: read `ipvsadm -S -n`, check every rule
            saved = multi_save_text(count)
            forget_parsed()
            verify_s = best_of(runs, lambda r=rules, t=saved: rules_held(r, t))
            # status: observe (parse), plan against it, report configured vs actual
            director = Director(config, runner=ListRunner(multi_list_text(count)))
            owned = owner_of(count)

            def status(d: Director = director, t: str = saved, s: State = owned) -> None:
                running = HostObservation(ipvs=cold_parse(t))  # type: ignore[arg-type]
                # (the VIPs are not in this observation: only the IPVS part is compared)
                plan = plan_director_start(d.config, running, s)
                if any(step.ipvs_rule for step in plan.steps):
                    raise SystemExit("status: the running table differs from the config")
                d.describe(running, s)

            status_s = best_of(runs, status)
            ours = load_s + plan_s + verify_s
            rows.append((count, f"{load_s * 1000:.0f}", f"{plan_s * 1000:.0f}",
                         f"{verify_s * 1000:.0f}", f"{ours / count * 1e6:.1f}",
                         f"{status_s * 1000:.0f}", len(rules),
                         len(list(units(plan.steps)))))
    table("start of N real servers (1,000 and 10,000: 1 service; 100,000: 1,000 x 100), our "
          "Python alone (best of 3; 1 run at 100,000)",
          ("real servers", "load config ms", "plan ms", "check batch ms",
           "us per real server (load + plan + check)", "status ms (parse + plan + report)",
           "ipvsadm rules", "units (batch = 1)"), rows)


# --- reading the config ------------------------------------------------------------------

def services_text(services: int, per_service: int) -> str:
    """`services` services (VIPs 10.200.x.y) of `per_service` real servers each."""
    vip, real = ipaddress.ip_address(VIP), ipaddress.ip_address("10.100.0.1")
    parts = ['[director]\ninterface = "eth0"\narping_count = 0\n']
    for index in range(services):
        parts.append(f'[[service]]\nvip = "{vip + index}"\nport = 80\nscheduler = "wrr"\n'
                     "real = [")
        parts += [f'  {{ address = "{real + index * per_service + n}", weight = 1 }},'
                  for n in range(per_service)]
        parts.append("]\n")
    return "\n".join(parts)


def best_cpu_of(runs: int, func: object) -> float:
    """Like best_of, in CPU time of this process: the machine may be shared, and other
    processes' load then inflates wall-clock times far more than ours."""
    times = []
    for _ in range(runs):
        started = time.process_time()
        func()  # type: ignore[operator]
        times.append(time.process_time() - started)
    return min(times)


FRESH_LOAD = """
import resource, sys, time
from lvs_scripts.config import load_config
started = time.process_time()
load_config(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None, store=False)
print(time.process_time() - started,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def fresh_load(path: Path, cache: Path | None) -> tuple[float, float]:
    """load_config in a new process, as a CLI run does it: (CPU seconds, peak RSS MiB)."""
    argv = [sys.executable, "-c", FRESH_LOAD, str(path)] + ([str(cache)] if cache else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout.split()
    return float(out[0]), float(out[1])


def per_real(seconds: float, count: int) -> str:
    return f"{seconds * 1000:.0f} ({seconds * 1e6 / count:.1f})"


def bench_config(runs: int = 3) -> None:
    """Reading the config: tomllib alone, validation, the compiled-config cache missed
    (parse and store) and hit, per real server; and a new process's load and peak RSS."""
    import tomllib

    from lvs_scripts.config_cache import ConfigCache

    rows: list[Sequence[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for services, per_service in ((1, 1000), (1, 10000), (1000, 100)):
            count = services * per_service
            path = Path(tmp) / f"lvs-{count}.toml"
            text = services_text(services, per_service)
            path.write_text(text)
            cache = Path(tmp) / f"lvs-{count}.cache"
            raw = path.read_bytes()
            toml_s = best_cpu_of(runs, lambda t=text: tomllib.loads(t))
            parse_s = best_cpu_of(runs, lambda p=path: load_config(str(p)))

            def miss(p: Path = path, c: Path = cache, r: bytes = raw) -> None:
                ConfigCache(str(c), str(p), r).store(load_config(str(p)))

            miss_s = best_cpu_of(runs, miss)
            hit_s = best_cpu_of(runs, lambda p=path, c=cache: load_config(str(p), str(c)))
            fresh_parse = fresh_load(path, None)
            fresh_hit = fresh_load(path, cache)

            shape = f"{count:,}" if services == 1 else f"{count:,} ({services:,} x {per_service})"
            rows.append((shape, f"{len(raw) / 2**20:.1f}", *(
                per_real(s, count) for s in (toml_s, parse_s, miss_s, hit_s)),
                f"{per_real(fresh_parse[0], count)}, {fresh_parse[1]:.0f} MiB",
                f"{per_real(fresh_hit[0], count)}, {fresh_hit[1]:.0f} MiB"))
    table(f"reading the config: CPU ms (us per real server), best of {runs}; the new "
          "process's peak RSS",
          ("real servers", "file MiB", "tomllib alone", "load_config (no cache)",
           "cache miss: parse + store", "cache hit", "new process, no cache",
           "new process, cache hit"), rows)


def bench_fake_host(count: int) -> None:
    """start, reload of one weight, status and stop of `count` real servers through the
    CLI against the fake host (tests/fakes: its ipvsadm keeps the table in a JSON file, so
    the seconds are mostly the fake's), with the programs each started and our peak RSS."""
    from tests.fakes.fakehost import FakeHost

    print(f"\nthe CLI against the fake host, {count} real servers "
          f"({layout(count)[0]} services): seconds include the fake tools' own work\n")
    header = ("action", "rc", "s", "programs started", "peak RSS of lvs-director MB")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|", flush=True)
    # Our process's own peak, not the fake tools' (RUSAGE_CHILDREN would mix them in).
    wrapper = ("import resource, runpy, sys\n"
               "sys.argv = sys.argv[1:]\n"
               "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
               "finally:\n    print('maxrss', resource.getrusage(resource.RUSAGE_SELF)"
               ".ru_maxrss, file=sys.stderr)\n")
    with tempfile.TemporaryDirectory() as tmp:
        host = FakeHost(Path(tmp) / "host")
        env = dict(host.env, LVS_SYSLOG="0", LVS_STATE_DIR=f"{tmp}/state",
                   LVS_LOCK_DIR=f"{tmp}/lock", PYTHONPATH=str(ROOT),
                   LVS_TEST_PROC_IP_VS=f"{tmp}/no-proc-ip-vs")
        config = Path(tmp) / "lvs.toml"
        config.write_text(multi_config_text(count))
        for action in ("start", "reload", "status", "stop"):
            if action == "reload":
                config.write_text(multi_config_text(count, changed=count // 2))
            host.clear_calls()
            started = time.perf_counter()
            ran = subprocess.run([sys.executable, "-c", wrapper,
                                  str(ROOT / "bin" / "lvs-director"), "-c", str(config),
                                  action], env=env, capture_output=True, text=True,
                                 check=False)
            took = time.perf_counter() - started
            rss = [line.split()[1] for line in ran.stderr.splitlines()
                   if line.startswith("maxrss ")]
            row = (action, ran.returncode, f"{took:.1f}", len(host.calls()),
                   f"{int(rss[0]) / 1024:.0f}" if rss else "?")
            print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)


# --- cold start ----------------------------------------------------------------------------

# What `lvs-director -c FILE status` imports of ours (cli imports the rest lazily).
STATUS_MODULES = "lvs_scripts.cli, lvs_scripts.config, lvs_scripts.director"


def timed_runs(argv: Sequence[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        times.append(time.perf_counter() - started)
    return times


def bench_cold_start(runs: int) -> None:
    from tests.fakes.fakehost import FakeHost

    python = sys.executable
    # An installed package has its bytecode compiled (pip does it); a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile our sources on every start instead.
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "lvs_scripts")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        host = FakeHost(Path(tmp) / "host")
        env = dict(host.env, LVS_SYSLOG="0", LVS_STATE_DIR=f"{tmp}/state",
                   LVS_LOCK_DIR=f"{tmp}/lock", PYTHONPATH=str(ROOT))
        director = [python, str(ROOT / "bin" / "lvs-director")]
        seed = str(ROOT / "examples" / "seed-dr.toml")
        cases = [
            ("python -c pass", [python, "-c", "pass"]),
            ('python -c "import plumbum"', [python, "-c", "import plumbum"]),
            ("plumbum as the runner imports it (without urllib.request)",
             [python, "-c", "from lvs_scripts.runner import PlumbumRunner\n"
              "PlumbumRunner().prepare()"]),
            ("import plumbum + what `lvs-director status` loads",
             [python, "-c", f"import plumbum, {STATUS_MODULES}"]),
            ("import plumbum + what `lvs-director --help` loads",
             [python, "-c", "import plumbum, lvs_scripts.cli"]),
            ("lvs-director --help", [*director, "--help"]),
            ("lvs-director --dry-run status (fake tools)",
             [*director, "-c", seed, "--dry-run", "status"]),
            ("lvs-director --dry-run start (fake tools)",
             [*director, "-c", seed, "--dry-run", "start"]),
        ]
        # Interleaved, so that a noisy spell of the machine hits every command alike.
        measured: dict[str, list[float]] = {label: [] for label, _ in cases}
        for _ in range(runs):
            for label, argv in cases:
                measured[label] += timed_runs(argv, env, 1)
    base = min(measured["python -c pass"])
    rows = [(label, f"{min(times) * 1000:.0f}", f"{statistics.median(times) * 1000:.0f}",
             f"{(min(times) - base) * 1000:+.0f}") for label, times in measured.items()]
    table(f"cold start ({runs} runs each; noise only ever adds, so compare the fastest)",
          ("command", "fastest ms", "median ms", "fastest over bare python"), rows)
    for what, modules in (("--help", "lvs_scripts.cli"),
                          ("status", STATUS_MODULES)):
        ours = own_import_ms(python, modules, runs)
        print(f"our own import time after plumbum, for `lvs-director {what}`: {ours:.1f} ms "
              "(python -X importtime, best of runs; goal: under 30 ms)")


def own_import_ms(python: str, modules: str, runs: int) -> float:
    """What importing our modules costs once plumbum is loaded: the cumulative times
    that `python -X importtime` reports for the top-level lvs_scripts imports."""
    best = float("inf")
    for _ in range(runs):
        err = subprocess.run([python, "-X", "importtime", "-c",
                              f"import plumbum\nimport {modules}"],
                             capture_output=True, text=True, check=True).stderr
        total = 0
        after_plumbum = False
        for line in err.splitlines():
            parts = line.split("|")
            if len(parts) != 3:
                continue
            name = parts[2]
            if name.strip() == "plumbum" and not name.startswith("  "):
                after_plumbum = True
            elif after_plumbum and name.startswith(" lvs_scripts"):
                total += int(parts[1])
        best = min(best, total / 1000)
    return best


# --- the real kernel (lab only) ------------------------------------------------------------

class CountingRunner:
    """A PlumbumRunner that counts the programs it starts, by name."""

    def __init__(self) -> None:
        self.inner = PlumbumRunner()
        self.counts: dict[str, int] = {}

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            check: bool = True) -> Result:
        self.counts[argv[0]] = self.counts.get(argv[0], 0) + 1
        return self.inner.run(argv, stdin=stdin, check=check)


def sh(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, stdout=subprocess.DEVNULL)


def require_lab(what: str) -> None:
    """Exit unless inside the lab VM: what follows changes addresses and IPVS rules."""
    if os.environ.get("LVS_LAB") != "1" or not Path("/proc/net/ip_vs").exists():
        sys.exit(f"{what} runs only inside the lab VM (python -m lab run -- ...): "
                 "it changes addresses and IPVS rules")


def vip_interface(name: str = "bench0", peer: str = "bench1") -> None:
    """An interface of our own for the VIPs: the VM has no network card (-nic none)."""
    if subprocess.run(["ip", "link", "show", name], capture_output=True,
                      check=False).returncode != 0:
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", name, "up")


def run_seed_script(lines: Sequence[str]) -> float:
    """The original scripts' style: one ipvsadm process per rule, from a shell (`sh -e`,
    so the first failing rule stops it). Returns its seconds."""
    started = time.perf_counter()
    sh("sh", "-e", stdin="\n".join(lines) + "\n")
    return time.perf_counter() - started


def bench_kernel(sizes: list[int], script_max: int) -> None:
    from lvs_scripts.director import Director
    from lvs_scripts.locks import Paths

    require_lab("bench --kernel")
    vip_interface()
    # The rows time start inside one Python process; what a CLI call adds on top (Python,
    # plumbum and our imports) is measured once here, and plumbum is loaded before row 1.
    started = time.perf_counter()
    sh(sys.executable, str(ROOT / "bin" / "lvs-director"), "--help")
    cli_s = time.perf_counter() - started
    import plumbum  # noqa: F401  (what the first row would otherwise pay alone)

    print(f"\nstart-up of one CLI call in this VM (`lvs-director --help`): {cli_s:.2f} s")
    header = ("real servers", "script style s", "script ipvsadm runs", "ours s",
              "ours programs started", "ours ipvsadm runs", "speed-up", "reload 1 weight s",
              "reload rules")
    print("\nstart of 1 service x N real servers on a real IPVS kernel (lab VM, emulated "
          "CPU: compare ratios, not seconds)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|", flush=True)
    for count in sizes:
        sh("ipvsadm", "-C")
        script_s: float | None = None
        if count <= script_max:
            lines = [f"ipvsadm -A -t {VIP}:80 -s wrr"] + [
                f"ipvsadm -a -t {VIP}:80 -r {address}:80 -g -w 1" for address in reals(count)]
            script_s = run_seed_script(lines)
            sh("ipvsadm", "-C")
        with tempfile.TemporaryDirectory() as tmp:
            config_file = Path(tmp) / "lvs.toml"
            config_file.write_text(config_text(count, "bench0"))
            runner = CountingRunner()
            director = Director(load_config(str(config_file)), runner=runner,
                                paths=Paths("lvs-director", f"{tmp}/state", f"{tmp}/lock"))
            started = time.perf_counter()
            director.start()
            ours_s = time.perf_counter() - started
            spawns = sum(runner.counts.values())
            ipvsadm = runner.counts.get("ipvsadm", 0)
            # reload after one weight changed in the config
            text = config_file.read_text().replace("weight = 1 }", "weight = 3 }", 1)
            config_file.write_text(text)
            director = Director(load_config(str(config_file)), runner=CountingRunner(),
                                paths=Paths("lvs-director", f"{tmp}/state", f"{tmp}/lock"))
            started = time.perf_counter()
            report = director.reload()
            reload_s = time.perf_counter() - started
            reload_rules = sum(1 for step in report.plan.steps if step.ipvs_rule)
            director.stop()
        ratio = f"{script_s / ours_s:.1f}x" if script_s else "not run"
        row = (count, f"{script_s:.2f}" if script_s else "-", count + 1 if script_s
               else "-", f"{ours_s:.2f}", spawns, ipvsadm, ratio, f"{reload_s:.2f}",
               reload_rules)
        print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)
    sh("ip", "link", "del", "bench0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", action="store_true",
                        help="the real-kernel part (lab VM only)")
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--script-max", type=int, default=1000,
                        help="largest N run in the one-process-per-rule style")
    parser.add_argument("--runs", type=int, default=15, help="cold-start repetitions")
    parser.add_argument("--config", action="store_true",
                        help="only the table of reading the config")
    parser.add_argument("--fake-host", type=int, default=10000, metavar="N",
                        help="also run the CLI against the fake host with N real servers "
                        "(0: not)")
    parser.add_argument("--no-cold-start", action="store_true")
    args = parser.parse_args()
    print(f"lvs_scripts benchmark, {date.today()}, {platform.node()}, "
          f"{platform.machine()}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, kernel {platform.release()}")
    if args.kernel:
        bench_kernel([int(n) for n in args.sizes.split(",")], args.script_max)
        return 0
    if args.config:
        bench_config()
        return 0
    bench_planning()
    bench_start_python()
    bench_config()
    if args.fake_host:
        bench_fake_host(args.fake_host)
    if shutil.which(sys.executable) and not args.no_cold_start:
        bench_cold_start(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
