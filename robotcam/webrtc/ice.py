"""Which local addresses aiortc offers as ICE host candidates (`webrtc.host_addresses`).

aioice gathers from every address of every non-loopback interface, including container
bridges and VPNs a viewer can never reach, and leaves out 127.0.0.1 altogether. aioice reads
its module-level `get_host_addresses` at gather time and has no option for it, so the daemon
replaces that function for the life of the process and puts the original back on shutdown.

It also bounds how long a peer connection waits for STUN/TURN candidates (`bound_gathering`).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from typing import Any, Callable

import aioice.ice
import ifaddr

log = logging.getLogger(__name__)

AddressLister = Callable[[bool, bool], list[str]]


def _interface_addresses(name: str) -> list[str]:
    for adapter in ifaddr.get_adapters():
        if adapter.nice_name == name or adapter.name == name:
            return [ip.ip if isinstance(ip.ip, str) else ip.ip[0] for ip in adapter.ips]
    return []


def resolve(entries: list[str], use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """Expand interface names to their current addresses; keep IP addresses as given."""
    addresses: list[str] = []
    for entry in entries:
        try:
            candidates = [str(ipaddress.ip_address(entry))]
        except ValueError:
            candidates = _interface_addresses(entry)
            if not candidates:
                log.warning("webrtc.host_addresses: interface %r has no address now", entry)
        for address in candidates:
            ip = ipaddress.ip_address(address.split("%")[0])
            if ip.is_link_local or (ip.version == 4 and not use_ipv4) or (ip.version == 6 and not use_ipv6):
                continue
            if address not in addresses:
                addresses.append(address)
    return addresses


def pin_host_addresses(entries: list[str]) -> Callable[[], None]:
    """Make aioice gather only these addresses; returns the function that undoes it.
    An empty list leaves aioice's own choice (every non-loopback interface)."""
    original: AddressLister = aioice.ice.get_host_addresses
    if not entries:
        return lambda: None

    def host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
        return resolve(entries, use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = host_addresses
    log.info("ICE host candidates limited to %s", ", ".join(entries))

    def restore() -> None:
        aioice.ice.get_host_addresses = original

    return restore


def _ice_gatherers(pc: Any) -> list[Any]:
    """The distinct ICE gatherers of a connection's transports (media and data channel)."""
    transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    gatherers: list[Any] = []
    for dtls in transports:
        gatherer = getattr(getattr(dtls, "transport", None), "iceGatherer", None)
        if gatherer is not None and gatherer not in gatherers:
            gatherers.append(gatherer)
    return gatherers


def bound_gathering(pc: Any, timeout: float) -> None:
    """Answer within `timeout` seconds whatever STUN/TURN servers do.

    aioice gathers host candidates at once, then asks the STUN/TURN servers in parallel
    tasks and waits for them with `asyncio.wait(..., timeout)`, keeping what arrived and
    cancelling the rest; that timeout is a parameter of `Connection.get_component_candidates`
    (5 s) that neither aioice nor aiortc exposes. An unreachable STUN server (UDP dropped, or
    ICMP errors, which aioice ignores) would otherwise hold every answer for those 5 s. So this
    connection's own gatherers call it with our bound: host candidates are never lost, and
    server-reflexive/relay candidates that come late are left out, as a browser would trickle
    them too late for a non-trickling answer. Call after setRemoteDescription (the transports
    exist) and before setLocalDescription (which gathers). Touches only this connection."""
    for gatherer in _ice_gatherers(pc):
        connection: Any = getattr(gatherer, "_connection", None)
        method = getattr(connection, "get_component_candidates", None)
        if method is None or isinstance(method, functools.partial):
            continue
        connection.get_component_candidates = functools.partial(method, timeout=timeout)
