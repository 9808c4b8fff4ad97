"""The SSRF guard: may the engine send a request to this URL? Pure functions, no I/O.

Three rules, from the module's ``security`` block, each named in refusals:

- ``require_https``: the scheme must be ``https`` (``http`` is refused).
- ``url_allowlist``: the host must match an entry. An entry is a host glob
  (``api.example.com``, ``*.example.com``, ``*``), an IP address or network
  (``127.0.0.1``, ``10.0.0.0/8``), or a URL glob when it has a scheme
  (``https://hooks.example.com/v1/*``).
- ``block_private_ips``: every address the host is, or resolves to, must be
  public. Loopback, private, link-local (169.254.x, fe80::), CGNAT, multicast,
  reserved and unspecified addresses are refused unless an IP or network
  entry of the allowlist covers them; a host glob, even ``*``, never does.

``check_url`` runs the first two (and the third for IP literals) on the URL
alone; ``check_addresses`` runs the third on a DNS answer. The caller does
the resolving, and connects only to addresses that passed.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RULE_URL = "invalid_url"
RULE_HTTPS = "require_https"
RULE_ALLOWLIST = "url_allowlist"
RULE_PRIVATE = "block_private_ips"
RULE_DNS = "dns"


class Refused(Exception):
    """The guard said no; ``rule`` names the setting (or ``invalid_url`` / ``dns``)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(frozen=True, slots=True)
class Allowlist:
    """The parsed ``url_allowlist`` entries."""

    hosts: tuple[str, ...] = ("*",)
    networks: tuple[IPNetwork, ...] = ()
    urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """Sort entries by kind; ValueError names a malformed one. No entries: allow any host."""
        hosts: list[str] = []
        networks: list[IPNetwork] = []
        urls: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                raise ValueError("an entry is empty")
            if "://" in entry:
                urls.append(entry.lower())
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                if "/" in entry:
                    raise ValueError(f"{entry!r} is neither a host name nor an IP network") from None
            hosts.append(entry.lower().rstrip("."))
        if not (hosts or networks or urls):
            hosts.append("*")
        return cls(tuple(hosts), tuple(networks), tuple(urls))

    def covers_address(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def admits(self, url: str, host: str, ip: IPAddress | None) -> bool:
        if any(fnmatch.fnmatchcase(host, pattern) for pattern in self.hosts):
            return True
        if ip is not None and self.covers_address(ip):
            return True
        lowered = url.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self.urls)


@dataclass(frozen=True, slots=True)
class Policy:
    """The ``security`` block. The defaults are the strict ones."""

    allowlist: Allowlist = field(default_factory=Allowlist)
    block_private_ips: bool = True
    require_https: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL that passed ``check_url`` points."""

    url: str
    scheme: str
    host: str  # lower case, no brackets, no trailing dot
    port: int
    ip: IPAddress | None  # set when the host is an IP literal


def blocked_address(ip: IPAddress) -> bool:
    """True for any address that is not plainly public (loopback, private, link-local, ...)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one is judged as that IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and blocked_address(embedded):
            return True
    return not ip.is_global or ip.is_multicast


def check_url(url: str, policy: Policy) -> Target:
    """Check the URL alone; raise Refused naming the rule it breaks."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise Refused(RULE_URL, f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(RULE_URL, f"{url!r} is not an http(s) URL")
    if not host:
        raise Refused(RULE_URL, f"{url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise Refused(RULE_URL, f"{_shown(url)} has credentials in it; use the invocation's auth instead")
    if policy.require_https and scheme != "https":
        raise Refused(
            RULE_HTTPS,
            f"{url} is refused by security.require_https: use an https:// URL "
            "(or set require_https: false in the iii-http-functions config)",
        )
    host = host.rstrip(".")
    try:
        ip: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if not policy.allowlist.admits(url.strip(), host, ip):
        raise Refused(
            RULE_ALLOWLIST,
            f"{url} is refused by security.url_allowlist: host {host} matches no entry "
            "(add it to url_allowlist in the iii-http-functions config)",
        )
    if ip is not None:
        _check_address(url, host, ip, policy)
    return Target(url=url.strip(), scheme=scheme, host=host, port=port or _PORTS[scheme], ip=ip)


def check_addresses(target: Target, addresses: Sequence[str], policy: Policy) -> list[str]:
    """Check a DNS answer for ``target``'s host; return the addresses (all of which passed)."""
    if not addresses:
        raise Refused(RULE_DNS, f"{target.url}: host {target.host} has no address")
    parsed = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise Refused(RULE_DNS, f"{target.url}: DNS answered {text!r}, not an address") from None
        _check_address(target.url, target.host, ip, policy)
        parsed.append(text)
    return parsed


def _check_address(url: str, host: str, ip: IPAddress, policy: Policy) -> None:
    if policy.block_private_ips and blocked_address(ip) and not policy.allowlist.covers_address(ip):
        via = "" if host == str(ip) else f" (host {host} resolves to it)"
        raise Refused(
            RULE_PRIVATE,
            f"{url} is refused by security.block_private_ips: {ip} is a loopback, private or "
            f"link-local address{via}; allow-list that address (e.g. url_allowlist: [{ip}]) "
            "if the engine should call it",
        )


def _shown(url: str) -> str:
    """The URL without its userinfo (never echo a password)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"***@{netloc}").geturl()


_PORTS = {"http": 80, "https": 443}
