"""Prometheus metrics of `lvs-director watch` (`[director] metrics = "ADDRESS:PORT"`), with
prometheus_client: its HTTP server thread (the library's) answers scrapes, and this
collector builds the figures at scrape time, so nothing is computed between scrapes:

- per real server: health (1 up, 0 down, -1 unknown, -2 disabled; unchecked ones are not
  listed), configured and actual weight, active and inactive connections (`ipvsadm -L -n`),
  the duration of its last check, transitions by the state entered;
- per service: connections, packets and bytes in and out (`ipvsadm -L -n --stats --exact`).

The kernel figures cost two ipvsadm runs per scrape; a failing one leaves its metrics out
(logged once per scrape), never the whole answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import LvsError
from .healthstate import target_id
from .model import IPAddress, endpoint
from .probes import IPVS_LIST, IPVS_STATS, parse_ipvs_list, parse_ipvs_stats

if TYPE_CHECKING:
    from .watch import Watcher

log = logging.getLogger("lvs_scripts")
HEALTH_VALUES = {"up": 1, "down": 0, "unknown": -1}


class WatchCollector:
    """A prometheus_client custom collector over a running Watcher."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def describe(self) -> list[Any]:
        return []  # figures are built at scrape time only; nothing to check at register

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        real = ["service", "real"]
        health = GaugeMetricFamily("lvs_real_server_health", "1 up, 0 down, -1 not checked "
                                   "yet, -2 disabled by an admin", labels=real)
        weight = GaugeMetricFamily("lvs_real_server_weight", "weight in the config "
                                   "(configured) and in the kernel (actual)",
                                   labels=[*real, "kind"])
        conns = GaugeMetricFamily("lvs_real_server_connections", "connections in the kernel",
                                  labels=[*real, "state"])
        duration = GaugeMetricFamily("lvs_check_duration_seconds", "duration of the last "
                                     "check", labels=real)
        transitions = CounterMetricFamily("lvs_health_transitions", "health transitions, by "
                                          "the state entered", labels=[*real, "to"])
        director = self.watcher.director
        view_health = self.watcher.checker.health
        disabled = _disabled(director)
        counters = _run(director, IPVS_LIST, parse_ipvs_list)
        counts = dict(self.watcher.transitions)
        for service in director.config.services:
            name = str(service.key)
            seen = counters.get(service.key, {}) if counters else {}
            for dest in service.destinations:
                labels = [name, dest.endpoint()]
                key = target_id(service, dest)
                weight.add_metric([*labels, "configured"], dest.weight)
                numbers = seen.get(dest.ident)
                if numbers is not None:
                    weight.add_metric([*labels, "actual"], numbers.weight)
                    conns.add_metric([*labels, "active"], numbers.active)
                    conns.add_metric([*labels, "inactive"], numbers.inactive)
                if any(entry.matches(key) for entry in disabled):
                    health.add_metric(labels, -2)
                elif service.check is not None:
                    state = view_health[key].state if key in view_health else "unknown"
                    health.add_metric(labels, HEALTH_VALUES[state])
                if key in self.watcher.durations:
                    duration.add_metric(labels, self.watcher.durations[key])
                for state in ("up", "down"):
                    if (key, state) in counts:
                        transitions.add_metric([*labels, state], counts[(key, state)])
        yield from (health, weight, conns, duration, transitions)
        yield from _service_stats(director)


def _disabled(director: Any) -> list[Any]:
    try:
        return list(director.health_view().disabled)
    except LvsError as err:
        log.error("metrics: %s", err)
        return []


def _run(director: Any, argv: tuple[str, ...], parse: Any) -> Any:
    try:
        return parse(director.runner.run(argv).stdout)
    except LvsError as err:
        log.error("metrics: %s", err)
        return None


def _service_stats(director: Any) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily

    stats = _run(director, IPVS_STATS, parse_ipvs_stats)
    families = {name: CounterMetricFamily(f"lvs_service_{name}", f"{name} of the service "
                                          "(ipvsadm --stats)", labels=["service"])
                for name in ("connections", "in_packets", "out_packets", "in_bytes",
                             "out_bytes")}
    wanted = {service.key for service in director.config.services}
    for key, (totals, _reals) in (stats or {}).items():
        if key not in wanted:
            continue
        for name, value in zip(families, (totals.conns, totals.inpkts, totals.outpkts,
                                          totals.inbytes, totals.outbytes)):
            families[name].add_metric([str(key)], value)
    yield from families.values()


def serve(watcher: Watcher, where: tuple[IPAddress, int]) -> None:
    """Start prometheus_client's HTTP server (a thread of its own) on ADDRESS:PORT."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(WatchCollector(watcher))
    address, port = where
    try:
        start_http_server(port, str(address), registry=registry)
    except OSError as err:
        raise LvsError(f"metrics: cannot listen on {endpoint(address, port)}: "
                       f"{err.strerror}") from None
    log.info("watch: metrics on http://%s/metrics", endpoint(address, port))
