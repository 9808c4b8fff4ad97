"""Name resolution for HTTP-invoked functions, behind a seam tests can replace.

A ``Resolve`` maps ``(host, port)`` to address strings. ``GuardedResolver``
plugs one into aiohttp: every connection the client opens asks it, and it
hands back only addresses that passed ``guard.check_addresses``. So the
address checked is the address connected to (no second lookup a rebinding
DNS server could answer differently), on the first request and after every
redirect.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from pyiii.modules.http_functions.guard import RULE_DNS, Policy, Refused, Target, check_addresses

Resolve = Callable[[str, int], Awaitable[list[str]]]
LOOKUP_TIMEOUT_S = 5.0


async def system_resolve(host: str, port: int) -> list[str]:
    """The host's addresses from the operating system's resolver."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise Refused(RULE_DNS, f"DNS lookup of {host} failed: {exc or 'timed out'}") from None
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen[str(sockaddr[0])] = None
    return list(seen)


async def vetted_addresses(target: Target, policy: Policy, resolve: Resolve) -> list[str]:
    """``target``'s addresses, each checked; Refused if any is not allowed."""
    if target.ip is not None:
        return [str(target.ip)]
    return check_addresses(target, await resolve(target.host, target.port), policy)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver: looks up through ``resolve``, refuses what the policy refuses."""

    def __init__(self, policy: Policy, resolve: Callable[[], Resolve]) -> None:
        self.policy = policy
        self._resolve = resolve  # read at each lookup, so a test can swap the seam

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        target = Target(url=f"{host}:{port}", scheme="", host=host.rstrip(".").lower(), port=port, ip=None)
        addresses = await vetted_addresses(target, self.policy, self._resolve())
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None
