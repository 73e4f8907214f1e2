"""The director: VIPs on its interface, the default route, the IPVS services."""

from __future__ import annotations

from typing import Any

from .errors import LvsError
from .ha import describe_ha, ha_files, member_of, observe_ha, plan_ha_start, this_host
from .model import Config, HaDirector
from .observe import observe_director
from .plan import Plan
from .plan_director import plan_director_start, unmanaged_notes
from .probes import IPVS_LIST, Counters, HostObservation, parse_ipvs_list
from .role import Role
from .state import State


class Director(Role):
    name = "lvs-director"

    def __init__(self, config: Config | None, *args: Any, host: str | None = None,
                 **kwargs: Any) -> None:
        """host: this director's [ha] directors entry (default $LVS_HOST or the host
        name); only read with [ha]."""
        self.member: HaDirector | None = None
        if config is not None:
            config.require_director()  # before any lock is taken or program started
            if config.ha is not None:
                self.member = member_of(config, this_host(host))
        super().__init__(config, *args, **kwargs)
        self.ha_files = ha_files(self.paths) if self.member is not None else None

    def observe(self, state: State, tolerant: bool = False) -> HostObservation:
        obs = observe_director(self.config, self.runner, tolerant, state)
        if self.ha_files is not None:
            observe_ha(self.ha_files, self.runner, tolerant, obs)
        return obs

    def plan_start(self, obs: HostObservation, state: State) -> Plan:
        if self.member is not None and self.ha_files is not None:
            return plan_ha_start(self.config, self.member, self.ha_files, obs, state,
                                 self.drain)
        return plan_director_start(self.config, obs, state, self.drain)

    def plan_stop(self, obs: HostObservation, state: State) -> Plan:
        plan = super().plan_stop(obs, state)
        unmanaged_notes(plan, obs, state)
        return plan

    def present(self, obs: HostObservation) -> bool:
        interface = self.config.require_director().interface
        if self.member is not None and (obs.keepalived is not None or obs.sync_daemons):
            return True
        return any(s.key in obs.ipvs for s in self.config.services) or any(
            obs.has_address(interface, vip) for vip in self.config.director_vips())

    def counters(self) -> Counters:
        try:
            return parse_ipvs_list(self.runner.run(IPVS_LIST).stdout)
        except LvsError:
            return {}

    def describe(self, obs: HostObservation, state: State) -> tuple[list[str], dict[str, Any]]:
        counters = self.counters() if obs.ipvs else {}
        lines: list[str] = []
        services: list[dict[str, Any]] = []
        for service in self.config.services:
            seen = obs.ipvs.get(service.key)
            managed = state.owns_service(service.key)
            status = "absent" if seen is None else ("managed" if managed else "NOT MANAGED")
            lines.append(f"{service.key}  {service.scheduler}  [{status}]")
            reals: list[dict[str, Any]] = []
            have = {d.ident: d for d in seen.destinations} if seen else {}
            numbers = counters.get(service.key, {})
            for dest in service.destinations:
                actual = have.get(dest.ident)
                count = numbers.get(dest.ident)
                lines.append(
                    f"  -> {dest.endpoint():<28} weight {dest.weight:>5} "
                    f"(actual {actual.weight if actual else '-':>5})"
                    + (f"  active {count.active} inactive {count.inactive}" if count else ""))
                reals.append({"address": dest.endpoint(), "weight": dest.weight,
                              "actual_weight": actual.weight if actual else None,
                              "active": count.active if count else None,
                              "inactive": count.inactive if count else None})
            configured = {d.ident for d in service.destinations}
            for ident, extra in have.items():
                if ident not in configured:
                    lines.append(f"  -> {extra.endpoint():<28} not in the config "
                                 f"(weight {extra.weight})")
            services.append({"service": str(service.key), "scheduler": service.scheduler,
                             "status": status, "real": reals})
        keys = {s.key for s in self.config.services}
        unmanaged = [str(k) for k in obs.ipvs if k not in keys and not state.owns_service(k)]
        for key in unmanaged:
            lines.append(f"{key}  [not managed by lvs-director]")
        data: dict[str, Any] = {"services": services, "unmanaged": unmanaged}
        if self.member is not None:
            ha_lines, data["ha"] = describe_ha(self.config, self.member, obs)
            lines = ha_lines + lines
        return lines, data
