"""The iii-http-functions config block: defaults, the reference's test config, clear errors."""

from __future__ import annotations

import ipaddress

import pytest

from pyiii.config import parse_config
from pyiii.errors import ConfigError
from pyiii.modules.http_functions.config import HttpFunctionsConfig


def module_config(text: str) -> HttpFunctionsConfig:
    config = parse_config("workers:\n  - name: iii-state\n" + text, source="test.yaml", environ={})
    (entry,) = [m for m in config.modules if m.spec.name == "iii-http-functions"]
    assert isinstance(entry.config, HttpFunctionsConfig)
    return entry.config


def test_defaults_are_strict() -> None:
    policy = module_config("  - name: iii-http-functions\n").policy
    assert (policy.require_https, policy.block_private_ips) == (True, True)
    assert policy.allowlist.hosts == ("*",) and policy.allowlist.networks == ()


def test_the_reference_test_config_shape() -> None:
    policy = module_config(
        """\
  - name: iii-http-functions
    config:
      security:
        url_allowlist:
          - localhost
          - 127.0.0.1
        block_private_ips: false
        require_https: false
"""
    ).policy
    assert policy.allowlist.hosts == ("localhost",)
    assert policy.allowlist.networks == (ipaddress.ip_network("127.0.0.1/32"),)
    assert (policy.require_https, policy.block_private_ips) == (False, False)


def test_old_class_name() -> None:
    text = "  - class: modules::http_functions::HttpFunctionsModule\n"
    config = parse_config("modules:\n  - class: modules::state::StateModule\n" + text, source="t", environ={})
    assert "iii-http-functions" in config.modules_seen


@pytest.mark.parametrize(
    ("block", "says"),
    [
        (
            "security: {url_allowlist: [10.0.0.0/33]}",
            "'10.0.0.0/33' is neither a host name nor an IP network",
        ),
        ("security: {url_allowlist: [42]}", "entry 0 is"),
        ("security: {url_allowlist: ['']}", "entry 0 is"),
        ("security: {require_http: false}", "require_http"),
        ("securty: {}", "securty"),
        ("security: {block_private_ips: maybe}", "block_private_ips"),
    ],
)
def test_bad_blocks_name_what_to_fix(block: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        module_config(f"  - name: iii-http-functions\n    config: {{{block}}}\n")
    assert says in str(info.value)
    assert "test.yaml" in str(info.value)
