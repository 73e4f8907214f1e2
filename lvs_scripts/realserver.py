"""A real server: DR (VIPs on lo, ARP settings that keep it quiet about them), TUN (a
tunnel device with the VIPs) and NAT (the default route via the director)."""

from __future__ import annotations

from typing import Any

from .model import Config
from .observe import observe_realserver
from .plan import Plan
from .plan_realserver import arp_keys, nat_gateway, plan_realserver_start, require_nat_gateway
from .probes import HostObservation
from .role import Role
from .state import State
from .tunnel import tunnel_vips


class RealServer(Role):
    name = "lvs-realserver"

    def __init__(self, config: Config | None, *args: Any, **kwargs: Any) -> None:
        if config is not None:
            require_nat_gateway(config)  # before any lock is taken or program started
        super().__init__(config, *args, **kwargs)

    def observe(self, state: State, tolerant: bool = False) -> HostObservation:
        return observe_realserver(self.config, self.runner, tolerant, state)

    def plan_start(self, obs: HostObservation, state: State) -> Plan:
        return plan_realserver_start(self.config, obs, state)

    def present(self, obs: HostObservation) -> bool:
        gateway = nat_gateway(self.config)
        return any(obs.has_address("lo", vip) for vip in self.config.realserver_vips()) or any(
            obs.has_address(device, vip) for device, vip in tunnel_vips(self.config)) or (
            gateway is not None and any(r.via == gateway for r in obs.routes))

    def describe(self, obs: HostObservation, state: State) -> tuple[list[str], dict[str, Any]]:
        lines = []
        vips = []
        for vip in self.config.realserver_vips():
            on_lo = obs.has_address("lo", vip)
            lines.append(f"VIP {vip} on lo: {'yes' if on_lo else 'no'}")
            vips.append({"vip": str(vip), "on_lo": on_lo})
        for device, vip in sorted(tunnel_vips(self.config), key=str):
            there = obs.has_address(device, vip)
            lines.append(f"VIP {vip} on {device} (TUN): {'yes' if there else 'no'}")
            vips.append({"vip": str(vip), "device": device, "present": there})
        gateway = nat_gateway(self.config)
        route = None
        if gateway is not None:
            route = any(r.via == gateway for r in obs.routes)
            lines.append(f"default route via {gateway} (NAT): {'yes' if route else 'no'}")
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
        return lines, {"vips": vips, "sysctls": sysctls,
                       "nat_gateway": None if gateway is None else {
                           "address": str(gateway), "default_route": route}}
