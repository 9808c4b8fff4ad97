"""The HTTP-functions module's config block (``iii-http-functions``).

::

    - name: iii-http-functions
      config:
        security:
          url_allowlist: ["*.example.com", 127.0.0.1]   # default: any host
          block_private_ips: true                       # default
          require_https: true                           # default
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyiii.config.values import Block, found
from pyiii.modules.http_functions.guard import Allowlist, Policy


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpFunctionsConfig:
    """The ``security`` block, as the guard's policy."""

    policy: Policy = field(default_factory=Policy)


def parse(block: Block) -> HttpFunctionsConfig:
    """Validate an iii-http-functions ``config:`` block."""
    block.keys(("security",))
    security = block.block("security")
    security.keys(("url_allowlist", "block_private_ips", "require_https"))
    entries = security.list("url_allowlist")
    for i, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry.strip():
            security.fail(
                f"entry {i} is {found(entry)}; expected a host (api.example.com, *.example.com), "
                "an IP address or network (127.0.0.1, 10.0.0.0/8) or a URL glob (https://host/path/*)",
                "url_allowlist",
            )
    try:
        allowlist = Allowlist.parse(entries)
    except ValueError as exc:
        security.fail(str(exc), "url_allowlist")
    return HttpFunctionsConfig(
        policy=Policy(
            allowlist=allowlist,
            block_private_ips=security.bool("block_private_ips", True),
            require_https=security.bool("require_https", True),
        )
    )
