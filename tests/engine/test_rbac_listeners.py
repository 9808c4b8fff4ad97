"""Several worker listeners and RBAC, end to end in-process: real sockets, the pyiii SDK.

An internal listener (trusted workers: the auth function, the hooks, the
exposed and hidden functions) and a public RBAC listener (clients whose
every call and registration is checked).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pyiii.config import parse_config
from pyiii.engine.server import Server
from pyiii.errors import IIIError
from pyiii.sdk import connect
from reliability.relkit import RawWS
from support.ws_upgrade import upgrade_request

CONFIG = """\
workers:
  - name: iii-worker-manager
    config: {port: 40001}
  - name: iii-worker-manager
    config:
      port: 40002
      middleware_function_id: t::mw
      rbac:
        auth_function_id: t::auth
        auth_timeout_ms: 400
        on_function_registration_function_id: t::on-fn
        on_trigger_registration_function_id: t::on-trig
        on_trigger_type_registration_function_id: t::on-tt
        expose_functions:
          - match("pub::*")
          - match("engine::functions::list")
          - match("state::*")
          - metadata: {public: true, tier: match("free*")}
  - name: iii-state
"""


class Rig:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.internal = f"ws://127.0.0.1:{server.ports[0]}"
        self.public = f"ws://127.0.0.1:{server.ports[1]}"
        self.public_port = server.ports[1]
        self.auth_calls: list[dict[str, Any]] = []
        self.hook_calls: list[tuple[str, dict[str, Any]]] = []
        self.mw_calls: list[dict[str, Any]] = []
        self.auth_hang = asyncio.Event()


async def start(text: str = CONFIG) -> Server:
    config = parse_config(text, source="test")
    config = dataclasses.replace(
        config,
        port=0,
        extra_listeners=tuple(dataclasses.replace(x, port=0) for x in config.extra_listeners),
    )
    server = Server(config)
    await server.start()
    return server


GRANTS: dict[str, dict[str, Any]] = {
    "admin": {
        "allowed_functions": ["priv::granted"],
        "allow_trigger_type_registration": True,
        "allowed_trigger_types": ["t-type", "renamed-type"],
        "context": {"user": "u-admin"},
    },
    "restricted": {"forbidden_functions": ["pub::echo"], "context": {"user": "u-restricted"}},
    "prefixed": {"function_registration_prefix": "tenant", "context": {"user": "u-prefixed"}},
    "no-reg": {"allow_function_registration": False},
}


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    server = await start()
    r = Rig(server)
    trusted = await connect(r.internal, name="trusted", reconnect=False)

    async def auth(data: dict[str, Any]) -> Any:
        r.auth_calls.append(data)
        token = data["headers"].get("x-token")
        if token == "hang":
            await asyncio.sleep(30)
        if token == "none":
            return None
        if token == "garbage":
            return {"allowed_functions": "everything"}
        if token in GRANTS:
            return GRANTS[token]
        raise ValueError("invalid token")

    async def mw(data: dict[str, Any]) -> Any:
        r.mw_calls.append(data)
        payload = {**(data["payload"] or {}), "via_mw": data["context"].get("user")}
        return await trusted.trigger(data["function_id"], payload)

    def hook(name: str, deny_prefix: str, field: str, rewrite: dict[str, Any] | None = None) -> Any:
        def handler(data: dict[str, Any]) -> Any:
            r.hook_calls.append((name, data))
            if str(data[field]).startswith(deny_prefix):
                raise PermissionError(f"{name} says no")
            return rewrite(data) if callable(rewrite) else (rewrite or {})

        return handler

    trusted.register_function("t::auth", auth)
    trusted.register_function("t::mw", mw)
    trusted.register_function(
        "t::on-fn",
        hook(
            "fn",
            "denied::",
            "function_id",
            lambda d: {"metadata": {"hooked": True}} if d["function_id"].endswith("meta") else {},  # type: ignore[arg-type]
        ),
    )
    trusted.register_function("t::on-trig", hook("trig", "denied::", "function_id"))
    trusted.register_function(
        "t::on-tt",
        hook(
            "tt",
            "denied-tt",
            "trigger_type_id",
            lambda d: {"trigger_type_id": "renamed-type"} if d["trigger_type_id"] == "rename-me" else {},  # type: ignore[arg-type]
        ),
    )
    # (the engine adds the caller's worker id to a worker's payload; left out here)
    trusted.register_function("pub::echo", lambda d: {"echo": {k: v for k, v in d.items() if k[0] != "_"}})
    trusted.register_function("priv::hidden", lambda d: {"hidden": True})
    trusted.register_function("priv::granted", lambda d: {"granted": True})
    trusted.register_function(
        "meta::free", lambda d: {"meta": 1}, metadata={"public": True, "tier": "free-plan"}
    )
    trusted.register_function("meta::paid", lambda d: {"meta": 2}, metadata={"public": True, "tier": "paid"})
    await trusted.trigger("engine::functions::list", {})
    r.trusted = trusted  # type: ignore[attr-defined]
    yield r
    await trusted.shutdown()
    await server.stop()


async def client(rig: Rig, token: str, **options: Any) -> Any:
    return await connect(
        rig.public, name=f"c-{token}", reconnect=False, headers={"x-token": token}, **options
    )


async def upgrade_status(
    port: int, headers: dict[str, str] | None = None, path: str = "/"
) -> tuple[int, bytes]:
    """Send a WebSocket upgrade by hand; the HTTP status and the rest of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(f"127.0.0.1:{port}", path, headers))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    rest = b""
    if status != 101:
        rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return status, rest


# --------------------------------------------------------------------------- calls


async def test_exposed_granted_and_metadata_filters(rig: Rig) -> None:
    c = await client(rig, "admin")
    try:
        assert (await c.trigger("pub::echo", {"a": 1}))["echo"] == {"a": 1, "via_mw": "u-admin"}
        assert await c.trigger("priv::granted", {}) == {"granted": True}
        assert await c.trigger("meta::free", {}) == {"meta": 1}  # public: true AND tier free*
        for hidden in ("meta::paid", "priv::hidden", "t::auth", "no::such::fn"):
            with pytest.raises(IIIError) as info:
                await c.trigger(hidden, {})
            assert info.value.code == "FORBIDDEN"
            assert (
                info.value.message
                == f"function '{hidden}' not allowed (not in this listener's rbac.expose_functions)"
            )
    finally:
        await c.shutdown()
    auth = rig.auth_calls[-1]
    assert auth["headers"]["x-token"] == "admin" and auth["ip_address"] == "127.0.0.1"
    assert set(auth) == {"headers", "query_params", "ip_address"}


async def test_hidden_function_never_reached_and_middleware_sees_context(rig: Rig) -> None:
    reached: list[Any] = []
    rig.trusted.register_function("priv::spy", lambda d: reached.append(d))  # type: ignore[attr-defined]
    await rig.trusted.trigger("engine::functions::list", {})  # type: ignore[attr-defined]
    c = await client(rig, "admin")
    try:
        with pytest.raises(IIIError, match="FORBIDDEN"):
            await c.trigger("priv::spy", {"x": 1})
        await c.trigger("pub::echo", {"n": 2})
    finally:
        await c.shutdown()
    assert reached == []
    # The middleware ran for the exposed call only, with the session's context.
    assert [m["function_id"] for m in rig.mw_calls] == ["pub::echo"]
    assert rig.mw_calls[0]["context"] == {"user": "u-admin"} and rig.mw_calls[0]["payload"] == {"n": 2}


async def test_forbidden_functions_win_over_expose(rig: Rig) -> None:
    c = await client(rig, "restricted")
    try:
        with pytest.raises(IIIError) as info:
            await c.trigger("pub::echo", {})
        assert (
            info.value.code == "FORBIDDEN"
            and "in this connection's forbidden_functions" in info.value.message
        )
        assert await c.trigger("meta::free", {}) == {"meta": 1}
        await c.trigger("engine::log::info", {"message": "infrastructure is always allowed"})
    finally:
        await c.shutdown()


async def test_functions_list_shows_only_what_the_session_may_call(rig: Rig) -> None:
    admin, restricted = await client(rig, "admin"), await client(rig, "restricted")
    try:
        seen_admin = {
            f["function_id"] for f in (await admin.trigger("engine::functions::list", {}))["functions"]
        }
        seen_restricted = {
            f["function_id"] for f in (await restricted.trigger("engine::functions::list", {}))["functions"]
        }
        everything = {
            f["function_id"]
            for f in (await rig.trusted.trigger("engine::functions::list", {}))["functions"]  # type: ignore[attr-defined]
        }
    finally:
        await admin.shutdown()
        await restricted.shutdown()
    assert {"pub::echo", "priv::granted", "meta::free"} <= seen_admin
    assert not seen_admin & {"priv::hidden", "meta::paid", "t::auth", "t::mw"}
    assert "pub::echo" not in seen_restricted and "priv::granted" not in seen_restricted
    assert "meta::free" in seen_restricted
    assert {"priv::hidden", "t::auth", "meta::paid"} <= everything  # the internal listener sees all


# --------------------------------------------------------------------------- registrations


async def test_function_registration_prefix_and_hooks(rig: Rig) -> None:
    c = await client(rig, "prefixed")
    try:
        c.register_function(
            "echo", lambda d: {"from": "tenant", "d": {k: v for k, v in d.items() if k[0] != "_"}}
        )
        c.register_function("denied::x", lambda d: {"should": "not exist"})
        await asyncio.sleep(0.3)
        trusted = rig.trusted  # type: ignore[attr-defined]
        assert await trusted.trigger("tenant::echo", {"k": 1}) == {"from": "tenant", "d": {"k": 1}}
        with pytest.raises(IIIError) as info:
            await trusted.trigger("tenant::denied::x", {})
        assert info.value.code == "function_not_found"
        c.unregister_function("echo")
        await asyncio.sleep(0.2)
        with pytest.raises(IIIError, match="function_not_found"):
            await trusted.trigger("tenant::echo", {})
    finally:
        await c.shutdown()
    fn_hooks = [d for name, d in rig.hook_calls if name == "fn"]
    # the hook sees the worker's own ids; the prefix is added after it allowed one
    assert [d["function_id"] for d in fn_hooks] == ["echo", "denied::x"]
    assert fn_hooks[0]["context"] == {"user": "u-prefixed"}


async def test_function_hook_rewrites_metadata(rig: Rig) -> None:
    c = await client(rig, "admin")
    try:
        c.register_function("mine::meta", lambda d: 1)
        await asyncio.sleep(0.3)
        fns = (await rig.trusted.trigger("engine::functions::list", {}))["functions"]  # type: ignore[attr-defined]
    finally:
        await c.shutdown()
    assert next(f for f in fns if f["function_id"] == "mine::meta")["metadata"] == {"hooked": True}


async def test_function_registration_not_granted(rig: Rig) -> None:
    c = await client(rig, "no-reg")
    try:
        c.register_function("anything::x", lambda d: 1)
        await asyncio.sleep(0.3)
        with pytest.raises(IIIError, match="function_not_found"):
            await rig.trusted.trigger("anything::x", {})  # type: ignore[attr-defined]
    finally:
        await c.shutdown()
    assert not [d for name, d in rig.hook_calls if name == "fn"]  # refused before the hook


async def test_trigger_types_and_triggers(rig: Rig) -> None:
    engine = rig.server.engine
    admin, restricted = await client(rig, "admin"), await client(rig, "restricted")
    try:
        # restricted: no allow_trigger_type_registration -> refused before the hook
        restricted._soon(restricted._send_live, _frame({"type": "registertriggertype", "id": "t-type"}))
        admin._soon(admin._send_live, _frame({"type": "registertriggertype", "id": "denied-tt::x"}))
        admin._soon(
            admin._send_live, _frame({"type": "registertriggertype", "id": "t-type", "description": "d"})
        )
        admin._soon(admin._send_live, _frame({"type": "registertriggertype", "id": "rename-me"}))
        await asyncio.sleep(0.4)
        assert "denied-tt::x" not in engine.trigger_types
        assert engine.trigger_types["t-type"].provider is not None
        assert engine.trigger_types["renamed-type"].wire_id == "rename-me"
        tt_hooks = [d["trigger_type_id"] for name, d in rig.hook_calls if name == "tt"]
        assert tt_hooks == ["denied-tt::x", "t-type", "rename-me"]
        # triggers: type not in allowed_trigger_types, hook denial, target not callable, allowed
        admin.register_function("mine::target", lambda d: d)
        admin.register_trigger({"type": "cron", "function_id": "mine::target", "config": {}})
        admin.register_trigger({"type": "t-type", "function_id": "denied::fn", "config": {}})
        admin.register_trigger({"type": "t-type", "function_id": "priv::hidden", "config": {}})
        admin.register_trigger({"type": "t-type", "function_id": "mine::target", "config": {"k": 1}})
        await asyncio.sleep(0.4)
        bound = {(t.trigger_type, t.function_id) for t in engine.triggers.values()}
        assert ("t-type", "mine::target") in bound
        assert not bound & {("cron", "mine::target"), ("t-type", "denied::fn"), ("t-type", "priv::hidden")}
        trig_hooks = [d["function_id"] for name, d in rig.hook_calls if name == "trig"]
        assert trig_hooks == ["denied::fn", "priv::hidden", "mine::target"]  # cron refused before the hook
    finally:
        await admin.shutdown()
        await restricted.shutdown()
    assert "t-type" not in engine.trigger_types  # gone with its provider


def _frame(obj: dict[str, Any]) -> bytes:
    import msgspec

    return msgspec.json.encode(obj)


# --------------------------------------------------------------------------- upgrades


async def test_refused_upgrades_get_http_statuses(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    port = rig.public_port
    status, body = await upgrade_status(port, {"x-token": "wrong"})
    assert status == 401 and b"AUTH_ERROR" in body and b"invalid token" in body
    assert (await upgrade_status(port, {"x-token": "none"}))[0] == 403
    assert (await upgrade_status(port, {"x-token": "garbage"}))[0] == 500
    assert (await upgrade_status(port, {"x-token": "admin"}))[0] == 101
    assert any("auth function t::auth refused it" in r.getMessage() for r in caplog.records)
    # query parameters reach the auth function as lists
    await upgrade_status(port, {"x-token": "admin"}, path="/?a=1&a=2&b=")
    assert rig.auth_calls[-1]["query_params"] == {"a": ["1", "2"], "b": [""]}


async def test_hanging_auth_times_out_without_blocking_others(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    hanging = asyncio.ensure_future(upgrade_status(rig.public_port, {"x-token": "hang"}))
    started = loop.time()
    c = await client(rig, "admin")  # authenticated while the other waits
    try:
        assert (await c.trigger("pub::echo", {}))["echo"]["via_mw"] == "u-admin"
        assert loop.time() - started < 0.4
    finally:
        await c.shutdown()
    status, body = await hanging
    assert status == 503 and b"timed out" in body
    assert 0.35 < loop.time() - started < 5


async def test_channels_are_served_on_every_listener(rig: Rig) -> None:
    for port in rig.server.ports:
        # An unknown channel id answers 404 from the channel endpoint (not 401: no auth there).
        assert (await upgrade_status(port, path="/ws/channels/nope?key=x&dir=read"))[0] == 404


async def test_internal_listener_has_no_access_control(rig: Rig) -> None:
    trusted = rig.trusted  # type: ignore[attr-defined]
    assert await trusted.trigger("priv::hidden", {}) == {"hidden": True}
    assert rig.mw_calls == []  # the middleware belongs to the public listener only


async def test_functions_available_events_are_filtered_for_rbac_bindings(rig: Rig) -> None:
    events: list[set[str]] = []
    c = await client(rig, "prefixed")  # no allowed_trigger_types: any type
    try:
        c.register_function("watch", lambda e: events.append({f["function_id"] for f in e["functions"]}))
        c.register_trigger({"type": "engine::functions-available", "function_id": "watch", "config": {}})
        await asyncio.sleep(0.3)
        rig.trusted.register_function("priv::later", lambda d: 1)  # type: ignore[attr-defined]
        rig.trusted.register_function("pub::later", lambda d: 1)  # type: ignore[attr-defined]
        for _ in range(50):
            if any("pub::later" in e for e in events):
                break
            await asyncio.sleep(0.05)
    finally:
        await c.shutdown()
    assert any("pub::later" in e for e in events)
    seen = set().union(*events)
    assert not seen & {"priv::later", "priv::hidden", "t::auth"}


async def test_upgrades_waiting_on_auth_are_bounded() -> None:
    server = await start(
        "workers:\n  - name: iii-worker-manager\n  - name: iii-worker-manager\n    config:\n"
        "      port: 40003\n      limits: {max_connections: 2}\n"
        "      rbac: {auth_function_id: slow::auth, auth_timeout_ms: 1500}\n"
    )
    trusted = await connect(f"ws://127.0.0.1:{server.ports[0]}", name="t", reconnect=False)
    release = asyncio.Event()

    async def slow(data: dict[str, Any]) -> Any:
        await release.wait()
        return {}

    trusted.register_function("slow::auth", slow)
    await trusted.trigger("engine::functions::list", {})
    port = server.ports[1]
    try:
        waiting = [asyncio.ensure_future(upgrade_status(port)) for _ in range(2)]
        await asyncio.sleep(0.3)
        status, body = await upgrade_status(port)
        assert status == 503 and b"LIMIT_EXCEEDED" in body
        release.set()
        assert [s for s, _ in await asyncio.gather(*waiting)] == [101, 101]
    finally:
        await trusted.shutdown()
        await server.stop()


async def test_max_connections_counts_each_listener_apart() -> None:
    server = await start(
        "workers:\n  - name: iii-worker-manager\n  - name: iii-worker-manager\n    config:\n"
        "      port: 40004\n      limits: {max_connections: 1}\n"
    )
    internal = [
        await connect(f"ws://127.0.0.1:{server.ports[0]}", name=f"i{i}", reconnect=False) for i in range(3)
    ]
    url = f"ws://127.0.0.1:{server.ports[1]}"
    try:
        first = await connect(url, name="p1", reconnect=False)  # 3 on the other listener do not count
        extra = await RawWS.connect(url)
        refusal = await extra.recv_json()
        assert (
            refusal["error"]["code"] == "LIMIT_EXCEEDED"
            and "1 worker connections" in refusal["error"]["message"]
        )
        await extra.close()
        await first.shutdown()
    finally:
        for w in internal:
            await w.shutdown()
        await server.stop()


async def test_namespace_grants_limit_the_declared_namespace() -> None:
    server = await start(
        "workers:\n  - name: iii-worker-manager\n  - name: iii-worker-manager\n    config:\n"
        "      port: 40005\n      rbac: {auth_function_id: ns::auth}\n  - name: iii-state\n"
    )
    trusted = await connect(f"ws://127.0.0.1:{server.ports[0]}", name="t", reconnect=False)
    trusted.register_function("ns::auth", lambda d: {"namespaces": {"orders": ["svc::*"]}})
    await trusted.trigger("engine::functions::list", {})
    url = f"ws://127.0.0.1:{server.ports[1]}"
    try:
        raw = await RawWS.connect(url)
        await raw.recv_json()  # workerregistered
        for ns, ok in (("billing", False), ("orders", True)):
            reply = await raw.call("engine::workers::register", {"name": "n", "namespace": ns})
            assert ("error" not in reply) is ok, reply
            if not ok:
                assert reply["error"]["code"] == "FORBIDDEN" and "orders" in reply["error"]["message"]
        await raw.close()
    finally:
        await trusted.shutdown()
        await server.stop()
