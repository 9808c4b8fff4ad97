"""Tests for pyiii.config: both file shapes, env placeholders, defaults, errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyiii.config import EngineConfig, Limits, load_config, parse_config
from pyiii.engine.channels import ChannelSettings
from pyiii.engine.rbac import RbacPolicy
from pyiii.errors import ConfigError
from pyiii.modules.state.config import StateConfig

ROOT = Path(__file__).resolve().parents[1]

# Step 1 of the iii docs' "Manage Shared State" how-to (its `modules:` edition), as printed there.
SEED_CONFIG = """\
modules:
  - class: modules::state::StateModule
    config:
      adapter:
        class: modules::state::adapters::KvStore
        config:
          store_method: file_based  # Options: in_memory, file_based
          file_path: ./data/state_store.db  # required for file_based
"""


def write(tmp_path: Path, text: str, name: str = "iii-config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> EngineConfig:
    return load_config(write(tmp_path, text), environ=env or {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    message = str(info.value)
    assert "iii-config.yaml" in message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the seed


def test_seed_config_loads(tmp_path: Path) -> None:
    cfg = load(tmp_path, SEED_CONFIG)
    assert cfg.source == str(tmp_path / "iii-config.yaml")
    assert (cfg.host, cfg.port, cfg.auth_token) == ("127.0.0.1", 49134, None)
    assert cfg.state == StateConfig(
        adapter="kv", store_method="file_based", file_path="./data/state_store.db"
    )
    assert cfg.modules_seen == ["iii-state"]
    assert cfg.warnings == []
    assert cfg.limits == Limits()


def test_root_config_file_is_the_seed() -> None:
    path = ROOT / "iii-config.yaml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[0].startswith("#") and "127.0.0.1:49134" in lines[0]
    # The State guide's seed, then the console (its own port; tests set III_CONSOLE_PORT=0).
    assert "".join(lines[1:]).startswith(SEED_CONFIG)
    cfg = load_config(path, environ={})
    assert cfg.state is not None and cfg.state.store_method == "file_based"
    console = next(entry.config for entry in cfg.modules if entry.spec.name == "iii-console")
    assert console.port == 3113 and console.host == "127.0.0.1"
    assert next(e.config for e in load_config(path, environ={"III_CONSOLE_PORT": "0"}).modules
                if e.spec.name == "iii-console").port == 0


def test_seed_config_found_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, SEED_CONFIG)
    write(tmp_path, "port: 1\n", name="config.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, environ={})
    assert cfg.source == "iii-config.yaml"
    assert cfg.port == 49134


def test_config_yaml_is_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "port: 5000\n", name="config.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, environ={})
    assert (cfg.source, cfg.port, cfg.state) == ("config.yaml", 5000, None)


def test_no_file_gives_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, environ={})
    assert cfg.source is None
    assert (cfg.host, cfg.port, cfg.auth_token) == ("127.0.0.1", 49134, None)
    assert cfg.state == StateConfig(adapter="kv", store_method="in_memory")
    assert cfg.state.triggers_enabled is True and cfg.state.max_value_bytes is None
    assert cfg.modules_seen == ["iii-state", "iii-pubsub", "iii-cron"]  # what the reference enables
    assert cfg.limits == Limits(
        max_frame_bytes=16 * 1024 * 1024,
        max_connections=10000,
        max_pending_per_worker=10000,
        max_nesting_depth=64,
    )
    assert cfg.warnings == []


def test_explicit_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "iii-config.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"iii-config\.yaml: cannot read config file"):
        load_config(folder)


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "iii-config.yaml"
    path.write_bytes(b"port: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"iii-config\.yaml: .*not UTF-8"):
        load_config(path)


# --------------------------------------------------------------------------- new shape


def test_new_shape_with_every_state_field(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        registration_namespace_grace_ms: 5000
        workers:
          - name: iii-worker-manager
            config:
              host: 0.0.0.0
              port: 50000
              handshake_timeout_ms: 2000
              middleware_function_id: mw::check
              rbac: {auth_function_id: auth::fn}
              auth_token: s3cret
              limits:
                max_frame_bytes: 1048576
                max_connections: 10
                max_pending_per_worker: 20
                max_nesting_depth: 32
          - name: iii-state
            config:
              adapter:
                name: kv
                config: {store_method: file_based, file_path: /tmp/x.db, save_interval_ms: 100}
              triggers_enabled: false
              max_value_bytes: 1048576
              save_interval_ms: 7000
        """,
    )
    assert (cfg.host, cfg.port, cfg.auth_token) == ("0.0.0.0", 50000, "s3cret")
    assert cfg.handshake_timeout_ms == 2000
    assert cfg.middleware_function_id == "mw::check"
    assert cfg.rbac == RbacPolicy(auth_function_id="auth::fn")
    assert cfg.registration_namespace_grace_ms == 5000
    assert cfg.limits == Limits(
        max_frame_bytes=1048576, max_connections=10, max_pending_per_worker=20, max_nesting_depth=32
    )
    assert cfg.state == StateConfig(
        adapter="kv",
        store_method="file_based",
        file_path="/tmp/x.db",
        save_interval_ms=7000,  # the top-level value overrides the adapter's
        triggers_enabled=False,
        max_value_bytes=1048576,
    )
    assert cfg.modules_seen == ["iii-worker-manager", "iii-state"]
    assert cfg.warnings == []


def test_new_shape_adapter_save_interval_used_without_override(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        workers:
          - name: state
            config: {adapter: {name: kv, config: {save_interval_ms: 250}}, max_value_bytes: 0}
        """,
    )
    assert cfg.state == StateConfig(save_interval_ms=250, max_value_bytes=None)
    assert cfg.modules_seen == ["iii-state"]


def test_redis_and_bridge_adapters(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        workers:
          - name: iii-state
            config: {adapter: {name: redis, config: {redis_url: "redis://db:6380/2"}}}
        """,
    )
    assert cfg.state is not None
    assert (cfg.state.adapter, cfg.state.redis_url) == ("redis", "redis://db:6380/2")
    for key in ("url", "bridge_url"):
        cfg = load(
            tmp_path,
            f"""\
            workers:
              - name: iii-state
                config: {{adapter: {{name: bridge, config: {{{key}: "ws://other:49135"}}}}}}
            """,
        )
        assert cfg.state is not None
        assert (cfg.state.adapter, cfg.state.bridge_url) == ("bridge", "ws://other:49135")


def test_state_defaults_when_block_is_empty(tmp_path: Path) -> None:
    cfg = load(tmp_path, "workers:\n  - name: iii-state\n")
    assert cfg.state == StateConfig(adapter="kv", store_method="in_memory")


def test_modules_is_an_alias_of_workers(tmp_path: Path) -> None:
    cfg = load(tmp_path, "modules:\n  - name: iii-state\n")
    assert cfg.state == StateConfig()


def test_no_state_entry_means_no_state(tmp_path: Path) -> None:
    cfg = load(tmp_path, "workers: []\n")
    assert cfg.state is None
    assert cfg.modules_seen == []


def test_port_precedence(tmp_path: Path) -> None:
    manager = 'workers:\n  - name: iii-worker-manager\n    config: {port: 5001, host: "::1"}\n'
    assert load(tmp_path, manager).port == 5001
    assert load(tmp_path, manager).host == "::1"
    both = "port: 5002\nhost: 10.0.0.1\n" + manager
    assert load(tmp_path, both).port == 5002
    assert load(tmp_path, both).host == "10.0.0.1"
    assert load(tmp_path, "workers: []\n").port == 49134


def test_numeric_strings_are_accepted_for_ints(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        workers:
          - name: iii-worker-manager
            config: {port: "49135", limits: {max_connections: " 7 "}}
        """,
    )
    assert (cfg.port, cfg.limits.max_connections) == (49135, 7)


def test_suffix_instances(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        workers:
          - name: iii-exec
          - name: iii-exec#admin
            config: {port: 3112}
        """,
    )
    assert cfg.modules_seen == ["iii-exec", "iii-exec#admin"]
    assert len(cfg.warnings) == 2


def test_image_workers_are_ignored_with_a_warning(tmp_path: Path) -> None:
    cfg = load(tmp_path, "workers:\n  - name: my-worker\n    image: ghcr.io/me/w:1\n")
    assert cfg.modules_seen == ["my-worker"]
    assert "pyiii does not start worker images" in cfg.warnings[0]


def test_empty_auth_token_means_none(tmp_path: Path) -> None:
    text = "workers:\n  - name: iii-worker-manager\n    config: {auth_token: '${TOK:}'}\n"
    assert load(tmp_path, text).auth_token is None
    assert load(tmp_path, text, {"TOK": "abc"}).auth_token == "abc"
    assert load(tmp_path, "auth_token: xyz\n").auth_token == "xyz"


# --------------------------------------------------------------------------- old shape


def test_old_shape_port_host_and_adapters(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        port: ${III_PORT:49134}
        host: 0.0.0.0
        modules:
          - class: modules::state::StateModule
            config:
              adapter:
                class: modules::state::adapters::RedisAdapter
                config: {redis_url: "redis://r:6379"}
        """,
        {"III_PORT": "6000"},
    )
    assert (cfg.port, cfg.host) == (6000, "0.0.0.0")
    assert cfg.state == StateConfig(adapter="redis", redis_url="redis://r:6379")
    for cls in ("Bridge", "BridgeAdapter"):
        cfg = load(
            tmp_path,
            f"""\
            modules:
              - class: modules::state::StateModule
                config: {{adapter: {{class: "modules::state::adapters::{cls}"}}}}
            """,
        )
        assert cfg.state == StateConfig(adapter="bridge")


def test_known_old_modules_give_warnings(tmp_path: Path) -> None:
    classes = [
        "modules::observability::OtelModule",
        "modules::shell::ExecModule",
        "modules::bridge_client::BridgeClientModule",
    ]
    body = "".join(f"  - class: {c}\n    config: {{port: 3111}}\n" for c in classes)
    cfg = load(tmp_path, SEED_CONFIG + body)
    assert cfg.state is not None
    assert cfg.modules_seen[0] == "iii-state"
    assert cfg.modules_seen[1:] == [
        "iii-observability",
        "iii-exec",
        "iii-bridge",
    ]
    assert len(cfg.warnings) == len(classes)
    assert "modules[1] (class: modules::observability::OtelModule)" in cfg.warnings[0]
    assert "module iii-observability is not implemented by pyiii; ignored" in cfg.warnings[0]


def test_known_new_names_give_warnings(tmp_path: Path) -> None:
    names = [
        "iii-observability",
        "iii-exec",
        "iii-bridge",
        "iii-engine-functions",
        "configuration",
        "iii-telemetry",
    ]
    cfg = load(tmp_path, "workers:\n" + "".join(f"  - name: {n}\n" for n in names))
    assert cfg.state is None
    assert len(cfg.warnings) == len(names)
    assert all("is not implemented by pyiii; ignored" in w for w in cfg.warnings)
    assert "iii-observability" in cfg.modules_seen


def test_stream_module_config(tmp_path: Path) -> None:
    from pyiii.modules.stream.config import StreamConfig

    cfg = load(
        tmp_path,
        "workers:\n  - name: stream\n    config: {port: 4000, auth_function: auth::fn,"
        " adapter: {name: redis, config: {redis_url: 'redis://127.0.0.1:7000'}}}\n",
    )
    (entry,) = cfg.modules
    assert entry.spec.name == "iii-stream"
    assert entry.config == StreamConfig(
        port=4000, auth_function="auth::fn", adapter="redis", redis_url="redis://127.0.0.1:7000"
    )
    old = load(tmp_path, "modules:\n  - class: modules::stream::StreamModule\n")
    assert old.modules[0].config == StreamConfig()  # port 3112 on 127.0.0.1, kv in memory
    bridged = load(
        tmp_path,
        "workers:\n  - name: iii-stream\n    config: {adapter: {name: bridge, config: {bridge_url: 'ws://127.0.0.1:9'}}}\n",
    )
    assert bridged.modules[0].config == StreamConfig(adapter="bridge", bridge_url="ws://127.0.0.1:9")


def test_stream_module_bad_config(tmp_path: Path) -> None:
    from pyiii.errors import ConfigError

    with pytest.raises(ConfigError, match="prt"):
        load(tmp_path, "workers:\n  - name: iii-stream\n    config: {prt: 1}\n")
    with pytest.raises(ConfigError, match="postgres"):
        load(tmp_path, "workers:\n  - name: iii-stream\n    config: {adapter: {name: postgres}}\n")


# --------------------------------------------------------------------------- env placeholders


def test_env_set_default_and_empty_default(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        port: ${III_PORT:49134}
        host: ${III_HOST:127.0.0.2}
        auth_token: "x${EMPTY:}y"
        """,
        {"III_PORT": "7000"},
    )
    assert (cfg.port, cfg.host, cfg.auth_token) == (7000, "127.0.0.2", "xy")


def test_env_no_bash_semantics(tmp_path: Path) -> None:
    assert load(tmp_path, "host: ${X:-a}\n").host == "-a"


def test_env_missing_variable_names_it_and_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, "workers: []\nport: ${III_MISSING_PORT}\n")
    assert "III_MISSING_PORT" in message
    assert "line 2" in message


def test_env_placeholder_in_comments_is_ignored(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        # set ${III_PORT} to move the listener
        port: 5005  # or ${ALSO_UNSET}
        modules:   # ${NOPE:x}
          # - class: ${NOT_EXPANDED}
          - class: modules::state::StateModule
        """,
    )
    assert cfg.port == 5005
    assert cfg.state is not None


def test_env_hash_inside_quotes_is_kept(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        host: "a #${H:b} c"  # ${UNSET_IN_COMMENT}
        auth_token: 'it''s #${T:tok} # still'
        """,
    )
    assert cfg.host == "a #b c"
    assert cfg.auth_token == "it's #tok # still"


def test_env_hash_without_space_is_not_a_comment(tmp_path: Path) -> None:
    assert load(tmp_path, "host: a#${H:b}\n").host == "a#b"
    # an apostrophe inside a plain scalar does not open a quoted string
    assert load(tmp_path, "host: it's #${UNSET}\n").host == "it's"


def test_env_default_may_contain_hash(tmp_path: Path) -> None:
    assert load(tmp_path, "host: ${H:a #b}\n", {"H": "v"}).host == "v"
    assert load(tmp_path, 'host: "${H:a #b}"\n').host == "a #b"


def test_env_in_block_scalar_is_expanded(tmp_path: Path) -> None:
    text = """\
    workers:
      - name: iii-worker-manager
        config:
          auth_token: |
            # ${TOKEN}
          port: 5000
    """
    cfg = load(tmp_path, text, {"TOKEN": "abc"})
    assert cfg.auth_token == "# abc\n"
    assert cfg.port == 5000
    message = error(tmp_path, text)
    assert "TOKEN" in message and "line 5" in message


def test_env_in_multiline_quoted_string_is_expanded(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'host: "a\n  #${H:b}"\n')
    assert cfg.host == "a #b"


def test_env_in_flow_mapping(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        workers:
          - name: iii-worker-manager
            config: { port: ${III_PORT:49134}, host: 0.0.0.0 }  # ${C}
        """,
    )
    assert (cfg.port, cfg.host) == (49134, "0.0.0.0")


# --------------------------------------------------------------------------- errors


def test_both_names_of_a_rename_pair_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: iii-state\n  - name: state\n")
    assert "workers[1] (name: state)" in message
    assert "'state' and 'iii-state'" in message
    message = error(tmp_path, "workers:\n  - name: http\n  - name: iii-http\n")
    assert "'iii-http' and 'http'" in message


def test_state_listed_twice_is_an_error(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: iii-state\n  - name: iii-state#b\n")
    assert "workers[1] (name: iii-state#b)" in message and "only once" in message


def test_unknown_module_name_suggests_the_closest(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: iii-worker-manager\n  - name: iii-stat\n")
    assert "workers[1].name" in message
    assert "'iii-stat'" in message
    assert "did you mean 'iii-state'?" in message
    assert "iii-worker-manager" in message and "iii-http" in message


def test_unknown_module_class(tmp_path: Path) -> None:
    message = error(tmp_path, "modules:\n  - class: modules::state::StateModul\n")
    assert "modules[0].class" in message
    assert "'modules::state::StateModul'" in message
    assert "did you mean 'modules::state::StateModule'?" in message
    assert "modules::api::RestApiModule" in message


def test_unknown_module_without_suggestion(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: zzz\n")
    assert "did you mean" not in message
    assert "valid: iii-worker-manager" in message


@pytest.mark.parametrize(
    ("port", "found"),
    [("abc", "'abc' (string)"), ("0", "0 is out of range"), ("65536", "65536 is out of range")],
)
def test_bad_port(tmp_path: Path, port: str, found: str) -> None:
    message = error(tmp_path, f"port: {port}\n")
    assert "port:" in message and found in message
    assert ("1..65535" in message) or ("integer" in message)
    message = error(tmp_path, f"workers:\n  - name: iii-worker-manager\n    config: {{port: {port}}}\n")
    assert "workers[0] (name: iii-worker-manager).config.port" in message and found in message


@pytest.mark.parametrize("value", ["yes", '"yes"', "1", "on"])
def test_bad_triggers_enabled(tmp_path: Path, value: str) -> None:
    message = error(tmp_path, f"workers:\n  - name: iii-state\n    config: {{triggers_enabled: {value}}}\n")
    assert "workers[0] (name: iii-state).config.triggers_enabled" in message
    assert "expected a boolean" in message and "valid: true, false" in message


def test_bool_strings_are_accepted(tmp_path: Path) -> None:
    text = "workers:\n  - name: iii-state\n    config: {triggers_enabled: '${T:false}'}\n"
    cfg = load(tmp_path, text)
    assert cfg.state is not None and cfg.state.triggers_enabled is False


def test_negative_max_value_bytes(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: iii-state\n    config: {max_value_bytes: -1}\n")
    assert "config.max_value_bytes" in message and "-1 is out of range" in message
    assert ">= 0" in message


def test_unknown_adapter_name(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: iii-state\n    config: {adapter: {name: redsi}}\n")
    assert "workers[0] (name: iii-state).config.adapter.name" in message
    assert "'redsi'" in message and "did you mean 'redis'?" in message
    assert "valid: kv, redis, bridge" in message


def test_unknown_adapter_class(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        modules:
          - class: modules::state::StateModule
            config: {adapter: {class: modules::state::adapters::KvStor}}
        """,
    )
    assert "modules[0] (class: modules::state::StateModule).config.adapter.class" in message
    assert "did you mean 'modules::state::adapters::KvStore'?" in message
    assert "modules::state::adapters::RedisAdapter" in message


def test_unknown_store_method(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        workers:
          - name: iii-state
            config: {adapter: {name: kv, config: {store_method: file}}}
        """,
    )
    assert "config.adapter.config.store_method" in message
    assert "'file'" in message and "valid: in_memory, file_based" in message


def test_unknown_key_in_state_config(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: iii-state\n    config: {triggers_enable: true}\n")
    assert "workers[0] (name: iii-state).config.triggers_enable" in message
    assert "did you mean 'triggers_enabled'?" in message
    assert "max_value_bytes" in message


def test_unknown_key_in_adapter_config(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        workers:
          - name: iii-state
            config: {adapter: {name: redis, config: {store_method: file_based}}}
        """,
    )
    assert "config.adapter.config.store_method" in message and "valid: redis_url" in message


def test_unknown_key_in_worker_manager(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: iii-worker-manager\n    config: {prot: 1}\n")
    assert "workers[0] (name: iii-worker-manager).config.prot" in message
    assert "did you mean 'port'?" in message and "handshake_timeout_ms" in message


def test_bad_limits(tmp_path: Path) -> None:
    text = "workers:\n  - name: iii-worker-manager\n    config: {limits: {max_connections: 0}}\n"
    message = error(tmp_path, text)
    assert "config.limits.max_connections" in message and ">= 1" in message
    text = "workers:\n  - name: iii-worker-manager\n    config: {limits: {max_frames: 1}}\n"
    message = error(tmp_path, text)
    assert "config.limits.max_frames" in message and "max_frame_bytes" in message


def test_channel_settings(tmp_path: Path) -> None:
    assert parse_config("workers: []\n", source="t").channels == ChannelSettings()
    text = """\
    workers:
      - name: iii-worker-manager
        config:
          channels: {buffer_size: 8, max_buffer_bytes: 65536, ttl_ms: 1500, max_channels: 50}
    """
    settings = parse_config(textwrap.dedent(text), source="t").channels
    assert settings == ChannelSettings(
        default_buffer_size=8, max_buffer_size=1024, max_buffer_bytes=65536, ttl_s=1.5, max_channels=50
    )
    message = error(tmp_path, "workers:\n  - name: iii-worker-manager\n    config: {channels: {ttl: 5}}\n")
    assert "config.channels.ttl" in message and "did you mean 'ttl_ms'?" in message
    message = error(
        tmp_path,
        "workers:\n  - name: iii-worker-manager\n"
        "    config: {channels: {buffer_size: 99, max_buffer_size: 10}}\n",
    )
    assert "config.channels.buffer_size" in message and "max_buffer_size (10)" in message
    message = error(tmp_path, "workers:\n  - name: iii-worker-manager\n    config: {channels: {ttl_ms: 0}}\n")
    assert "config.channels.ttl_ms" in message and ">= 1" in message


def test_bad_urls(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        """\
        workers:
          - name: iii-state
            config: {adapter: {name: redis, config: {redis_url: "http://x"}}}
        """,
    )
    assert "config.adapter.config.redis_url" in message and "redis://" in message
    message = error(
        tmp_path,
        """\
        workers:
          - name: iii-state
            config:
              adapter: {name: bridge, config: {url: "ws://a", bridge_url: "ws://b"}}
        """,
    )
    assert "disagree" in message


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    message = error(tmp_path, "workers:\n  - name: iii-state\n   bad: [\n")
    assert "invalid YAML at line" in message and "column" in message


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    message = error(tmp_path, "- name: iii-state\n")
    assert "top level" in message and "found a list" in message
    assert "workers, modules" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = error(tmp_path, "worker:\n  - name: iii-state\n")
    assert "top level" in message and "'worker'" in message
    assert "did you mean 'workers'?" in message
    assert "registration_namespace_grace_ms" in message


def test_workers_and_modules_together(tmp_path: Path) -> None:
    message = error(tmp_path, "workers: []\nmodules: []\n")
    assert "'workers' and 'modules'" in message


def test_entry_shape_errors(tmp_path: Path) -> None:
    assert "workers[0]" in error(tmp_path, "workers:\n  - iii-state\n")
    message = error(tmp_path, "workers:\n  - {nme: iii-state}\n")
    assert "workers[0]" in message and "no 'name'" in message
    message = error(tmp_path, "workers:\n  - {name: iii-state, confg: {}}\n")
    assert "workers[0] (name: iii-state).confg" in message and "did you mean 'config'?" in message
    message = error(tmp_path, "workers:\n  - {name: iii-state, class: modules::state::StateModule}\n")
    assert "both 'class'" in message
    assert "expected a list" in error(tmp_path, "workers: iii-state\n")


def test_empty_file_loads_nothing(tmp_path: Path) -> None:
    cfg = load(tmp_path, "# only a comment\n")
    assert cfg.state is None and cfg.modules_seen == []
    assert cfg.warnings and "empty" in cfg.warnings[0]


def test_yaml_12_scalars(tmp_path: Path) -> None:
    # 0755 is decimal (YAML 1.2), not octal as in PyYAML's default YAML 1.1
    assert load(tmp_path, "port: 0755\n").port == 755
    assert load(tmp_path, "port: 0x1F90\n").port == 8080


def test_parse_config_from_text() -> None:
    cfg = parse_config(SEED_CONFIG, source="inline.yaml", environ={})
    assert cfg.source == "inline.yaml" and cfg.state is not None
    with pytest.raises(ConfigError, match=r"^inline\.yaml: "):
        parse_config("port: x\n", source="inline.yaml", environ={})


def test_file_based_without_file_path_says_where_the_store_is() -> None:
    def parsed(adapter_config: str) -> EngineConfig:
        text = "workers:\n  - name: iii-state\n    config:\n"
        text += f"      adapter: {{name: kv, config: {adapter_config}}}\n"
        return parse_config(text, source="cfg.yaml", environ={})

    cfg = parsed("{store_method: file_based}")
    (warning,) = cfg.warnings
    assert warning.startswith("cfg.yaml: workers[0]")
    assert "file_path" in warning and "./data/state_store.db" in warning and "set file_path" in warning
    assert cfg.state is not None and cfg.state.file_path == "./data/state_store.db"
    assert parsed("{store_method: file_based, file_path: ./x.db}").warnings == []
    assert parsed("{store_method: in_memory}").warnings == []
