"""`lvs-director disable ADDRESS [--service VIP:PORT|fwmark:MARK]` and `enable`: what they
change in the health file's admin part, checked against the config first (an address that
is no real server is a usage error, exit 2, before anything is written)."""

from __future__ import annotations

import ipaddress
from typing import Callable

from .errors import UsageError
from .healthstate import Disabled, HealthView, service_part
from .model import Config, IPAddress, Protocol, VirtualService

Update = Callable[[HealthView], HealthView]


def admin_update(config: Config, action: str, address_text: str,
                 service_text: str | None) -> tuple[Update, str]:
    """The change to make to the health file, and a sentence saying what it is."""
    address = _address(address_text)
    services = [s for s in config.services if any(d.address == address
                                                  for d in s.destinations)]
    if service_text is not None:
        named = _service(service_text)
        services = [s for s in services if _names(named, s)]
    if not services:
        where = f"service {service_text}" if service_text else "any service"
        raise UsageError(f"{action}: {address} is not a real server of {where} in "
                         f"{config.path}")
    if service_text is None:
        entries = [Disabled(str(address))]
        scope = f"in {len(services)} service(s)"
    else:
        # The health file keys a service by its part of a TargetId: a fwmark service by
        # its family's unspecified address and the mark (no VIP can be unspecified).
        parts = dict.fromkeys(service_part(s)[1:] for s in services)
        entries = [Disabled(str(address), vip, vport) for vip, vport in parts]
        scope = f"in {service_text}"
    if action == "disable":
        return _adding(entries), f"{address} disabled {scope} (weight 0 until enabled)"
    return _removing(entries), f"{address} enabled {scope} (its checks decide again)"


def _adding(entries: list[Disabled]) -> Update:
    def update(view: HealthView) -> HealthView:
        view.disabled += [entry for entry in entries if entry not in view.disabled]
        return view
    return update


def _removing(entries: list[Disabled]) -> Update:
    """enable ADDRESS lifts every disable of the address; enable ADDRESS --service S only
    the one for S (a disable in every service stays: enable ADDRESS lifts that)."""
    def lifts(entry: Disabled, d: Disabled) -> bool:
        return d.address == entry.address and (
            entry.vip is None or (d.vip, d.vport) == (entry.vip, entry.vport))

    def update(view: HealthView) -> HealthView:
        view.disabled = [d for d in view.disabled
                         if not any(lifts(entry, d) for entry in entries)]
        return view
    return update


def _address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise UsageError(f"{text!r:.60} is not an IP address") from None


FWMARK_PREFIX = "fwmark:"


def _service(text: str) -> tuple[IPAddress, int] | int:
    """--service VIP:PORT ([VIP]:PORT for IPv6): that address and port; fwmark:MARK: the
    mark (a fwmark service has no VIP)."""
    from .health import MAX_MARK
    from .probes import parse_endpoint

    if text.startswith(FWMARK_PREFIX):
        mark = text[len(FWMARK_PREFIX):]
        if mark.isascii() and mark.isdigit() and 1 <= int(mark) <= MAX_MARK:
            return int(mark)
        raise UsageError(f"--service {text!r:.60}: the mark must be a number from 1 to "
                         f"{MAX_MARK}")
    try:
        return parse_endpoint(text)
    except ValueError:
        raise UsageError(f"--service {text!r:.60}: must be VIP:PORT ([VIP]:PORT for "
                         "IPv6) or fwmark:MARK") from None


def _names(named: tuple[IPAddress, int] | int, service: VirtualService) -> bool:
    key = service.key
    if isinstance(named, int):
        return key.protocol is Protocol.FWMARK and key.port == named
    return key.address == named[0] and key.port == named[1]
