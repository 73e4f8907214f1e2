"""A DR real server: VIPs on lo, ARP settings that keep it quiet about them."""

from __future__ import annotations

from typing import Any

from .observe import observe_realserver
from .plan import Plan
from .plan_realserver import arp_keys, plan_realserver_start, plan_realserver_stop
from .probes import HostObservation
from .role import Role
from .state import State


class RealServer(Role):
    name = "lvs-realserver"

    def observe(self, tolerant: bool = False) -> HostObservation:
        return observe_realserver(self.config, self.runner, tolerant)

    def plan_start(self, obs: HostObservation, state: State) -> Plan:
        return plan_realserver_start(self.config, obs, state)

    def plan_stop(self, obs: HostObservation, state: State) -> Plan:
        return plan_realserver_stop(self.config, obs, state)

    def present(self, obs: HostObservation) -> bool:
        return any(obs.has_address("lo", vip) for vip in self.config.realserver_vips())

    def describe(self, obs: HostObservation, state: State) -> tuple[list[str], dict[str, Any]]:
        lines = []
        vips = []
        for vip in self.config.realserver_vips():
            on_lo = obs.has_address("lo", vip)
            lines.append(f"VIP {vip} on lo: {'yes' if on_lo else 'no'}")
            vips.append({"vip": str(vip), "on_lo": on_lo})
        sysctls = []
        for key, value in arp_keys(self.config).items():
            have = obs.sysctls.get(key)
            lines.append(f"{key} = {have if have is not None else '?'} (configured {value})")
            sysctls.append({"key": key, "value": have, "configured": value,
                            "before_start": state.sysctls.get(key)})
        return lines, {"vips": vips, "sysctls": sysctls}
