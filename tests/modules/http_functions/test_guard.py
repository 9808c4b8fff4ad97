"""The SSRF guard's decisions, with no I/O: URLs in, a resolver stub for DNS answers.

Nothing here opens a socket; the stub maps test host names (``*.test``) to
the addresses an attacker's DNS server might answer with.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from pyiii.modules.http_functions.dns import vetted_addresses
from pyiii.modules.http_functions.guard import (
    RULE_ALLOWLIST,
    RULE_DNS,
    RULE_HTTPS,
    RULE_PRIVATE,
    RULE_URL,
    Allowlist,
    Policy,
    Refused,
    blocked_address,
    check_url,
)

STRICT = Policy()  # the defaults: https only, private addresses blocked, any host
LOCAL = Policy(allowlist=Allowlist.parse(["127.0.0.1", "*.test"]), require_https=False)

DNS = {
    "api.test": ["93.184.216.34"],
    "internal.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "loop.test": ["127.0.0.1"],
    "mixed.test": ["93.184.216.34", "192.168.1.20"],
    "v6local.test": ["fe80::1%eth0"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "cgnat.test": ["100.64.0.9"],
}


async def stub(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise Refused(RULE_DNS, f"DNS lookup of {host} failed: no such name in the stub")
    return DNS[host]


def refusal(url: str, policy: Policy) -> Refused:
    with pytest.raises(Refused) as info:
        check_url(url, policy)
    return info.value


async def vet(url: str, policy: Policy) -> list[str]:
    return await vetted_addresses(check_url(url, policy), policy, stub)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://127.8.9.10/x",
        "https://10.0.0.1/",
        "https://172.16.5.4/",
        "https://192.168.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/",
        "https://[fe80::1]/",
        "https://[fd00::5]/",
        "https://[::ffff:127.0.0.1]/",
        "https://0.0.0.0/",
        "https://100.64.1.1/",
        "https://224.0.0.1/",
        "https://[2002:a00:1::]/",  # 6to4 wrapping 10.0.0.1
    ],
)
def test_private_literals_are_refused(url: str) -> None:
    refused = refusal(url, STRICT)
    assert refused.rule == RULE_PRIVATE
    assert "security.block_private_ips" in refused.message
    assert "url_allowlist" in refused.message  # says how to allow it


def test_public_literal_passes() -> None:
    target = check_url("https://93.184.216.34:8443/hook?x=1", STRICT)
    assert (target.host, target.port, str(target.ip)) == ("93.184.216.34", 8443, "93.184.216.34")
    assert not blocked_address(target.ip)  # type: ignore[arg-type]


def test_require_https() -> None:
    refused = refusal("http://api.test/hook", STRICT)
    assert refused.rule == RULE_HTTPS
    assert "security.require_https" in refused.message
    assert check_url("http://api.test/hook", LOCAL).port == 80


@pytest.mark.parametrize(
    "url",
    [
        "ftp://api.test/x",
        "file:///etc/passwd",
        "https:///nohost",
        "not a url",
        "https://a:99999/",
        "gopher://x",
    ],
)
def test_unusable_urls(url: str) -> None:
    assert refusal(url, STRICT).rule == RULE_URL


def test_credentials_in_url_are_refused_and_not_echoed() -> None:
    refused = refusal("https://user:hunter2@api.test/x", STRICT)
    assert refused.rule == RULE_URL
    assert "hunter2" not in refused.message


def test_allowlist_kinds() -> None:
    policy = Policy(
        allowlist=Allowlist.parse(["*.example.com", "203.0.113.0/24", "https://hooks.test/v1/*"]),
        require_https=False,
    )
    assert check_url("https://a.b.example.com/", policy).host == "a.b.example.com"
    assert check_url("https://API.EXAMPLE.COM./", policy).host == "api.example.com"
    # a network entry admits the address, but 203.0.113.x is documentation space: blocked
    # unless that entry also covers it -- which it does
    assert check_url("https://203.0.113.7/", policy).ip is not None
    assert check_url("https://hooks.test/v1/deliver", policy).host == "hooks.test"
    for url in (
        "https://example.com/",
        "https://hooks.test/v2/x",
        "https://evil.test/",
        "https://198.51.100.1/",
    ):
        refused = refusal(url, policy)
        assert refused.rule == RULE_ALLOWLIST, url
        assert "security.url_allowlist" in refused.message


def test_star_never_exempts_private_addresses() -> None:
    policy = Policy(allowlist=Allowlist.parse(["*"]), require_https=False)
    assert refusal("http://127.0.0.1:8080/", policy).rule == RULE_PRIVATE


def test_an_address_entry_exempts_only_that_address() -> None:
    assert str(check_url("http://127.0.0.1:9/x", LOCAL).ip) == "127.0.0.1"
    assert refusal("http://127.0.0.2:9/x", LOCAL).rule == RULE_ALLOWLIST  # not listed at all
    wide = Policy(allowlist=Allowlist.parse(["*", "127.0.0.1"]), require_https=False)
    assert refusal("http://127.0.0.2:9/x", wide).rule == RULE_PRIVATE


def test_block_private_ips_off() -> None:
    policy = Policy(block_private_ips=False, require_https=False)
    assert str(check_url("http://10.0.0.1/", policy).ip) == "10.0.0.1"


async def test_dns_answers_are_checked() -> None:
    assert await vet("https://api.test/hook", STRICT) == ["93.184.216.34"]
    for host, address in [
        ("internal.test", "10.1.2.3"),
        ("metadata.test", "169.254.169.254"),
        ("loop.test", "127.0.0.1"),
        ("mixed.test", "192.168.1.20"),  # one private answer is enough to refuse
        ("v6local.test", "fe80::1"),
        ("mapped.test", "::ffff:a00:1"),  # Python spells ::ffff:10.0.0.1 so
        ("cgnat.test", "100.64.0.9"),
    ]:
        with pytest.raises(Refused) as info:
            await vet(f"https://{host}/x", STRICT)
        assert info.value.rule == RULE_PRIVATE, host
        assert f"{address} is a loopback, private or link-local address" in info.value.message
        assert f"host {host} resolves to it" in info.value.message


async def test_dns_answer_covered_by_the_allowlist_passes() -> None:
    assert await vet("http://loop.test:8000/x", LOCAL) == ["127.0.0.1"]
    with pytest.raises(Refused) as info:
        await vet("http://internal.test/x", LOCAL)
    assert info.value.rule == RULE_PRIVATE


async def test_dns_failure_refuses() -> None:
    with pytest.raises(Refused) as info:
        await vet("https://nowhere.test/x", STRICT)
    assert info.value.rule == RULE_DNS


def test_allowlist_parse_errors() -> None:
    with pytest.raises(ValueError, match="neither a host name nor an IP network"):
        Allowlist.parse(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="empty"):
        Allowlist.parse([" "])
    assert Allowlist.parse([]).hosts == ("*",)


async def numeric_only(host: str, port: int) -> list[str]:
    """The OS resolver limited to numeric hosts (AI_NUMERICHOST): it never sends a DNS query."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, flags=socket.AI_NUMERICHOST, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(RULE_DNS, str(exc)) from None
    return [str(info[4][0]) for info in infos]


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1"])
async def test_odd_numeric_spellings_of_loopback_are_caught_by_the_answer(host: str) -> None:
    # Not IP literals to ipaddress, so they pass as names; the resolver turns them into 127.0.0.1.
    target = check_url(f"https://{host}/x", STRICT)
    assert target.ip is None
    with pytest.raises(Refused) as info:
        await vetted_addresses(target, STRICT, numeric_only)
    assert info.value.rule == RULE_PRIVATE
    assert "127.0.0.1 is a loopback" in info.value.message
