"""A DR real server: VIPs on lo, ARP settings that keep it quiet about them."""

from __future__ import annotations

from typing import Any

from .observe import observe_realserver
from .plan import Plan
from .plan_realserver import arp_keys, plan_realserver_start
from .probes import HostObservation
from .role import Role
from .state import State


class RealServer(Role):
    name = "lvs-realserver"

    def observe(self, state: State, tolerant: bool = False) -> HostObservation:
        return observe_realserver(self.config, self.runner, tolerant, state)

    def plan_start(self, obs: HostObservation, state: State) -> Plan:
        return plan_realserver_start(self.config, obs, state)

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
        configured = arp_keys(self.config)
        for key, value in configured.items():
            have = obs.sysctls.get(key)
            lines.append(f"{key} = {have if have is not None else '?'} (configured {value})")
            owned = state.sysctls.get(key)
            sysctls.append({"key": key, "value": have, "configured": value,
                            "before_start": owned.previous if owned else None})
        for key, owned in state.sysctls.items():
            if key not in configured:
                have = obs.sysctls.get(key)
                lines.append(f"{key} = {have if have is not None else '?'} (no longer "
                             f"configured; {owned.previous} before start)")
                sysctls.append({"key": key, "value": have, "configured": None,
                                "before_start": owned.previous})
        return lines, {"vips": vips, "sysctls": sysctls}
