"""Security defaults: loopback bind, worker tokens for every SDK, scope/key strings that cannot escape."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from relkit import Closed, RawWS, SdkProc, listening_addresses, require_compat

from pyiii import connect
from pyiii.errors import IIIError

TOKEN = "s3cret-token-for-tests"
AUTH_CONFIG = """
workers:
  - name: iii-worker-manager
    config:
      auth_token: ${III_TOKEN}
  - name: iii-state
    config:
      adapter: {name: kv, config: {store_method: in_memory}}
"""

# --- where the engine listens ------------------------------------------------------------------


def test_binds_loopback_by_default_without_warning(engine_proc: Any) -> None:
    assert listening_addresses(engine_proc.port) == {"127.0.0.1"}
    assert f"listening on ws://127.0.0.1:{engine_proc.port}" in engine_proc.output
    assert "without auth_token" not in engine_proc.output


def test_binding_elsewhere_without_token_warns_loudly(make_engine_proc: Any) -> None:
    eng = make_engine_proc("workers:\n  - name: iii-worker-manager\n    config: {host: 0.0.0.0}\n").start()
    assert listening_addresses(eng.port) == {"0.0.0.0"}
    assert eng.wait_for_output("without auth_token")
    line = next(line for line in eng.output.splitlines() if "without auth_token" in line)
    assert "WARNING" in line and "auth_token" in line, line


def test_binding_elsewhere_with_token_does_not_warn(make_engine_proc: Any) -> None:
    config = "workers:\n  - name: iii-worker-manager\n    config: {host: 0.0.0.0, auth_token: abc}\n"
    eng = make_engine_proc(config).start()
    assert listening_addresses(eng.port) == {"0.0.0.0"}
    assert "without auth_token" not in eng.output


# --- worker tokens -------------------------------------------------------------------------------


async def function_ids(url: str) -> set[str]:
    admin = await connect(url, token=TOKEN, reconnect=False)
    try:
        listing = await admin.trigger("engine::functions::list", {})
        return {f["function_id"] for f in listing["functions"]}
    finally:
        await admin.shutdown()


async def test_every_sdk_connects_with_the_token_and_nothing_without_it(
    make_engine_proc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_compat("node-0.22", "py-0.25.0")
    eng = make_engine_proc(AUTH_CONFIG, env={"III_TOKEN": TOKEN}).start()
    good_env = {"III_URL": eng.url}
    procs = [
        # Python 0.25 sends `Authorization: Bearer $III_TOKEN` by itself.
        await SdkProc.start("py-0.25.0", "serve-add", "p25", env={**good_env, "III_TOKEN": TOKEN}),
        # Node 0.22 takes custom upgrade headers.
        await SdkProc.start(
            "node-0.22",
            "serve-add",
            "n22",
            env={**good_env, "III_HEADERS": json.dumps({"Authorization": f"Bearer {TOKEN}"})},
        ),
        # The same SDKs with a wrong token, and with none.
        await SdkProc.start("py-0.25.0", "serve-add", "badp25", env={**good_env, "III_TOKEN": "wrong"}),
        await SdkProc.start(
            "node-0.22",
            "serve-add",
            "badn22",
            env={**good_env, "III_HEADERS": json.dumps({"Authorization": "Bearer wrong"})},
        ),
        await SdkProc.start("node-0.22", "serve-add", "anon22", env=good_env),
    ]
    try:
        # pyiii SDK: the token= option, and III_TOKEN from the environment.
        by_option = await connect(eng.url, token=TOKEN, reconnect=False)
        by_option.register_function("auth::option", lambda d: "option", inline=True)
        monkeypatch.setenv("III_TOKEN", TOKEN)
        by_env = await connect(eng.url, reconnect=False)
        monkeypatch.delenv("III_TOKEN")
        by_env.register_function("auth::env", lambda d: "env", inline=True)
        for proc in procs[:2]:
            await proc.wait_for(lambda m: m.get("ready") is True, 45)
        assert await by_env.trigger("auth::option", {}) == "option"
        assert await by_option.trigger("auth::env", {}) == "env"
        assert await by_option.trigger("p25::add", {"a": 1, "b": 2}) == {"c": 3}
        assert await by_option.trigger("n22::add", {"a": 2, "b": 2}) == {"c": 4}

        # pyiii SDK with a wrong or no token: refused with the reason, at once.
        for token in ("wrong", None):
            with pytest.raises(IIIError) as refused:
                await connect(eng.url, token=token, reconnect=False, connect_timeout=5)
            assert refused.value.code == "AUTH_ERROR" and "Authorization: Bearer" in refused.value.message

        # A raw client that registers and calls right after the upgrade: refused, nothing lands.
        for headers in ({"Authorization": "Bearer wrong"}, {}):
            ws = await RawWS.connect(eng.url, headers)
            await ws.send_json({"type": "registerfunction", "id": "evil::fn"})
            await ws.send_json(
                {
                    "type": "invokefunction",
                    "invocation_id": "i",
                    "function_id": "state::set",
                    "data": {"scope": "evil", "key": "k", "value": 1},
                }
            )
            first = await ws.recv_json()
            assert first["type"] == "error" and first["error"]["code"] == "AUTH_ERROR", first
            closed = await ws.recv()
            assert isinstance(closed, Closed) and closed.code == 1008, closed
            assert "AUTH_ERROR" in closed.reason and "token" in closed.reason, closed

        # The official workers with a bad or missing token keep retrying; give them time to try.
        await asyncio.sleep(3)
        ids = await function_ids(eng.url)
        assert {"p25::add", "n22::add", "auth::option", "auth::env"} <= ids
        assert not {i for i in ids if i.startswith(("badp25::", "badn22::", "anon22::", "evil::"))}, ids
        assert await by_option.trigger("state::get", {"scope": "evil", "key": "k"}) is None
        workers = await by_option.trigger("engine::workers::list", {})
        assert len(workers["workers"]) == 4, workers  # p25, n22 and the two pyiii workers
        for proc in procs[2:]:
            assert not any(m.get("ready") for m in proc.messages), proc.describe()
        await by_env.shutdown()
        await by_option.shutdown()
    finally:
        for proc in procs:
            await proc.stop()


# --- scope and key strings -----------------------------------------------------------------------

NASTY = [
    "../../../../../tmp/pyiii-escape",
    "..",
    ".",
    "/etc/passwd",
    "a/b/c",
    "a\\b\\c",
    "nul\x00inside",
    "\x00",
    "state:scope:key",
    "*",
    "[x]?",
    "%2e%2e%2f",
    "CON",
    "line\nbreak\r",
    " padded ",
    "\u202eevil",
    "\U0001f600" * 8,
    "x" * 100_000,
    "k" * 1_000_000,
]


async def round_trip_all(url: str, *, check_only: bool = False) -> None:
    client = await connect(url, reconnect=False)
    try:
        for i, name in enumerate(NASTY):
            value = {"i": i}
            if not check_only:
                await client.trigger("state::set", {"scope": name, "key": "k", "value": value})
                await client.trigger("state::set", {"scope": "nasty-keys", "key": name, "value": value})
            assert await client.trigger("state::get", {"scope": name, "key": "k"}) == value, repr(name[:40])
            assert await client.trigger("state::get", {"scope": "nasty-keys", "key": name}) == value, repr(
                name[:40]
            )
            assert await client.trigger("state::list", {"scope": name}) == [value]
        groups = (await client.trigger("state::list_groups", {}))["groups"]
        assert set(NASTY) | {"nasty-keys"} <= set(groups)
        listed = await client.trigger("state::list", {"scope": "nasty-keys"})
        assert sorted(v["i"] for v in listed) == list(range(len(NASTY)))
        # Empty names are either refused with a clear error or round-trip exactly.
        for scope, key in (("", "k"), ("empty-key", "")):
            try:
                await client.trigger("state::set", {"scope": scope, "key": key, "value": 1})
            except IIIError as err:
                assert err.code and err.message, err
                assert await client.trigger("state::get", {"scope": scope, "key": key}) is None
            else:
                assert await client.trigger("state::get", {"scope": scope, "key": key}) == 1
    finally:
        await client.shutdown()


def adapter_config(adapter: str, redis_url: str = "") -> str:
    cfg = {
        "in_memory": "{name: kv, config: {store_method: in_memory}}",
        "file_based": "{name: kv, config: {store_method: file_based, file_path: ./data/state}}",
        "redis": f"{{name: redis, config: {{redis_url: '{redis_url}'}}}}",
    }[adapter]
    return f"workers:\n  - name: iii-state\n    config:\n      adapter: {cfg}\n"


@pytest.mark.parametrize("adapter", ["in_memory", "file_based", "redis"])
async def test_scope_and_key_strings_round_trip_and_stay_inside_the_store(
    make_engine_proc: Any, tmp_path: Path, adapter: str, request: pytest.FixtureRequest
) -> None:
    redis_url = ""
    if adapter == "redis":
        import redis

        redis_url = request.getfixturevalue("redis_url") + "/9"  # a database of its own
        redis.Redis.from_url(redis_url).flushdb()
    workdir = tmp_path / "engine"
    workdir.mkdir()
    outside_before = set(tmp_path.parent.iterdir())
    eng = make_engine_proc(adapter_config(adapter, redis_url), workdir=workdir).start()
    await round_trip_all(eng.url)
    if adapter != "in_memory":  # and again from what the store kept
        eng.stop()
        eng.start()
        await round_trip_all(eng.url, check_only=True)
    eng.stop()
    files = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    expected = {"iii-config.yaml"}
    if adapter == "file_based":
        expected |= {"data", "data/state", "data/state/pyiii-state.sqlite3"}
    assert (
        set(files) - {"data/state/pyiii-state.sqlite3-wal", "data/state/pyiii-state.sqlite3-shm"} == expected
    ), files
    assert set(tmp_path.parent.iterdir()) == outside_before
    assert not Path("/tmp/pyiii-escape").exists()


# --- results come only from the worker that was asked --------------------------------------------


async def test_a_bystander_cannot_answer_a_call_routed_to_another_worker(engine: str) -> None:
    """Invocation ids are chosen by callers; knowing one must not let a third worker forge the result."""
    server = await connect(engine, reconnect=False)
    release = asyncio.Event()

    async def slow(_: Any) -> Any:
        await release.wait()
        return "genuine"

    server.register_function("real::slow", slow)
    caller = await RawWS.connect(engine)
    assert (await caller.recv_json())["type"] == "workerregistered"
    forger = await RawWS.connect(engine)
    assert (await forger.recv_json())["type"] == "workerregistered"
    await server.trigger("state::list_groups", {})  # the registration has been processed
    await caller.send_json(
        {"type": "invokefunction", "invocation_id": "known-id", "function_id": "real::slow", "data": {}}
    )
    await asyncio.sleep(0.2)
    await forger.send_json(
        {
            "type": "invocationresult",
            "invocation_id": "known-id",
            "function_id": "real::slow",
            "result": "forged",
        }
    )
    await forger.send_json({"type": "ping"})
    assert await forger.recv_json() == {"type": "pong"}  # the forged result was processed (and dropped)
    release.set()
    reply = await caller.recv_json()
    assert reply["invocation_id"] == "known-id" and reply.get("result") == "genuine", reply
    await caller.close()
    await forger.close()
    await server.shutdown()
