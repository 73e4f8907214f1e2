"""`lvs-director disable ADDRESS [--service VIP:PORT]` and `enable`: what they change in the
health file's admin part, checked against the config first (an address that is no real
server is a usage error, exit 2, before anything is written)."""

from __future__ import annotations

import ipaddress
from typing import Callable

from .errors import UsageError
from .healthstate import Disabled, HealthView
from .model import Config, IPAddress

Update = Callable[[HealthView], HealthView]


def admin_update(config: Config, action: str, address_text: str,
                 service_text: str | None) -> tuple[Update, str]:
    """The change to make to the health file, and a sentence saying what it is."""
    address = _address(address_text)
    vip, vport = _service(service_text) if service_text is not None else (None, None)
    services = [s for s in config.services if any(d.address == address
                                                  for d in s.destinations)]
    if vip is not None:
        services = [s for s in services if s.key.address == vip and s.key.port == vport]
    if not services:
        where = f"service {service_text}" if service_text else "any service"
        raise UsageError(f"{action}: {address} is not a real server of {where} in "
                         f"{config.path}")
    entry = Disabled(str(address), None if vip is None else str(vip), vport)
    scope = f"in {service_text}" if vip is not None else \
        f"in {len(services)} service(s)"
    if action == "disable":
        return _adding(entry), f"{address} disabled {scope} (weight 0 until enabled)"
    return _removing(entry), f"{address} enabled {scope} (its checks decide again)"


def _adding(entry: Disabled) -> Update:
    def update(view: HealthView) -> HealthView:
        if entry not in view.disabled:
            view.disabled.append(entry)
        return view
    return update


def _removing(entry: Disabled) -> Update:
    """enable ADDRESS lifts every disable of the address; enable ADDRESS --service S only
    the one for S (a disable in every service stays: enable ADDRESS lifts that)."""
    def update(view: HealthView) -> HealthView:
        view.disabled = [d for d in view.disabled if not (
            d.address == entry.address and (entry.vip is None or
                                            (d.vip, d.vport) == (entry.vip, entry.vport)))]
        return view
    return update


def _address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"{text!r:.60} is not an IP address") from None


def _service(text: str) -> tuple[IPAddress, int]:
    from .probes import parse_endpoint

    try:
        vip, port = parse_endpoint(text)
    except ValueError:
        raise UsageError(f"--service {text!r:.60}: must be VIP:PORT ([VIP]:PORT for "
                         "IPv6)") from None
    return vip, port
