"""The official iii SDKs (npm iii-sdk 0.9.0 / 0.22.1, PyPI iii-sdk 0.11.6 / 0.25.0) against pyiii.

Each test runs real worker programs (tests/compat/{node/worker.mjs,python/worker.py}) as
subprocesses against an engine subprocess, the way a user's workers would run. Needs `.compat/`
(`make test` / `scripts/install-compat.sh`); a missing install fails the test, never skips it.
"""

from __future__ import annotations

import ast
import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from compat_kit import (
    COMPAT,
    IN_MEMORY_CONFIG,
    PYTHON,
    REPO_CONFIG,
    SEED,
    SEED_FILES,
    VERSIONS,
    Spawner,
    as_latest_sdk,
    ensure_node_modules,
    prefix_of,
    require_compat,
    wait_output,
)

from pyiii import IIIError, Worker, connect

pytestmark = pytest.mark.timeout(120)

MakePyiii = Callable[[str], Awaitable[Worker]]


@pytest.fixture(scope="module", autouse=True)
def _compat_installed() -> None:
    require_compat()


@pytest.fixture
async def pyiii_worker() -> AsyncIterator[MakePyiii]:
    """Factory for pyiii SDK workers in the test process (shut down afterwards)."""
    made: list[Worker] = []

    async def make(url: str) -> Worker:
        worker = await connect(url, name=f"pytest-pyiii-{len(made)}")
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.shutdown()


def handler_data(msg: dict[str, Any]) -> Any:
    """The payload a handler printed, without the engine's `_caller_worker_id` (added to every object)."""
    data = msg.get("data")
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k != "_caller_worker_id"}
    return data


def error_of(msg: dict[str, Any], who: str) -> dict[str, Any]:
    assert "error" in msg, f"{who}: expected an error, got {msg}"
    return dict(msg["error"])


async def call_until_ok(
    worker: Worker, function_id: str, payload: Any, deadline_s: float, timeout_ms: int = 2000
) -> tuple[Any, list[str]]:
    """Retry a call until it succeeds (e.g. while a worker re-registers); (result, errors seen)."""
    seen: list[str] = []
    until = time.monotonic() + deadline_s
    while True:
        try:
            return await worker.trigger(function_id, payload, timeout_ms=timeout_ms), seen
        except IIIError as e:
            if not seen or seen[-1] != e.code:
                seen.append(e.code)
            if time.monotonic() > until:
                pytest.fail(f"{function_id} not callable within {deadline_s:g}s; errors seen: {seen}")
            await asyncio.sleep(0.25)


# -- serve + call ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_serve_and_call_same_version(engine_proc: Any, spawn: Spawner, version: str) -> None:
    url, prefix = engine_proc.url, prefix_of(version)
    server = await spawn.official(version, "serve-add", prefix, url=url)
    await server.ready()

    add, fail, unknown = await asyncio.gather(
        spawn.official(version, "call", f"{prefix}::add", '{"a": 2, "b": 3}', url=url),
        spawn.official(version, "call", f"{prefix}::fail", '{"x": 1}', url=url),
        spawn.official(version, "call", f"{prefix}::nope", "{}", url=url),
    )
    add_out, fail_out, unknown_out = await asyncio.gather(add.result(), fail.result(), unknown.result())

    assert add_out == {"result": {"c": 5}}
    invoked = await server.wait_for(lambda m: m.get("invoked") == f"{prefix}::add", 5, "the add invocation")
    assert handler_data(invoked) == {"a": 2, "b": 3}

    err = error_of(fail_out, f"{version} call ::fail")
    assert err["code"] == "invocation_failed"
    assert "boom" in err["message"]

    err = error_of(unknown_out, f"{version} call ::nope")
    assert err["code"] == "function_not_found"
    assert f"{prefix}::nope" in err["message"]


# -- mixed: official SDK workers and pyiii SDK workers ----------------------------------------


async def test_mixed_official_and_pyiii_workers(
    engine_proc: Any, spawn: Spawner, pyiii_worker: MakePyiii
) -> None:
    url = engine_proc.url
    me = await pyiii_worker(url)

    @me.function("pyiii::mul")
    async def mul(data: dict[str, Any]) -> dict[str, Any]:
        return {"product": data["a"] * data["b"]}

    servers = await asyncio.gather(*(spawn.official(v, "serve-add", prefix_of(v), url=url) for v in VERSIONS))
    await asyncio.gather(*(s.ready() for s in servers))
    # the pyiii function is routable once our own round trip to it works
    assert await me.trigger("pyiii::mul", {"a": 1, "b": 1}) == {"product": 1}

    # official SDKs -> pyiii SDK function (the Node ones are the headline; Python too)
    callers = await asyncio.gather(
        *(spawn.official(v, "call", "pyiii::mul", '{"a": 6, "b": 7}', url=url) for v in VERSIONS)
    )
    outs = await asyncio.gather(*(c.result() for c in callers))
    for version, out in zip(VERSIONS, outs, strict=True):
        assert out == {"result": {"product": 42}}, f"{version} -> pyiii::mul"

    # pyiii SDK -> each official SDK's function
    results = await asyncio.gather(
        *(me.trigger(f"{prefix_of(v)}::add", {"a": i, "b": 100}) for i, v in enumerate(VERSIONS))
    )
    assert results == [{"c": 100 + i} for i in range(len(VERSIONS))]

    with pytest.raises(IIIError) as info:
        await me.trigger(f"{prefix_of('node-0.22')}::fail", {})
    assert info.value.code == "invocation_failed"
    assert info.value.message == "boom"


# -- invocation_stopped ------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_killed_worker_fails_pending_call_with_invocation_stopped(
    engine_proc: Any, spawn: Spawner, pyiii_worker: MakePyiii, version: str
) -> None:
    url, prefix = engine_proc.url, prefix_of(version)
    server = await spawn.official(version, "serve-add", prefix, url=url)
    await server.ready()
    caller = await pyiii_worker(url)

    call = asyncio.create_task(caller.trigger(f"{prefix}::slow", {"ms": 60_000}, timeout_ms=20_000))
    await server.wait_for(lambda m: m.get("invoked") == f"{prefix}::slow", 10, "the slow invocation")
    assert not call.done()

    killed_at = time.monotonic()
    server.kill()
    with pytest.raises(IIIError) as info:
        await asyncio.wait_for(call, 5)
    elapsed = time.monotonic() - killed_at
    assert info.value.code == "invocation_stopped", info.value
    assert elapsed < 1.0, f"caller learned of the dead worker after {elapsed:.2f}s"


# -- engine restart ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_worker_survives_engine_restart(
    make_engine_proc: Any, spawn: Spawner, pyiii_worker: MakePyiii, version: str
) -> None:
    engine = make_engine_proc().start()
    url, prefix = engine.url, prefix_of(version)
    server = await spawn.official(version, "serve-add", prefix, url=url)
    await server.ready()

    await asyncio.to_thread(engine.stop)
    await asyncio.sleep(0.5)
    assert server.returncode is None, f"{version} worker died with the engine\n{server.describe()}"
    await asyncio.to_thread(engine.start)  # same port, same working directory

    # The SDK reconnects with backoff (1 s, 2 s, 4 s ... +-30 %) and replays its registrations.
    caller = await pyiii_worker(url)
    result, _ = await call_until_ok(caller, f"{prefix}::add", {"a": 20, "b": 22}, deadline_s=30)
    assert result == {"c": 42}
    await server.wait_for(lambda m: handler_data(m) == {"a": 20, "b": 22}, 5, "the post-restart call")
    assert server.returncode is None, "the worker must not have been restarted"


# -- Logger ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_logger_line_reaches_engine_output(engine_proc: Any, spawn: Spawner, version: str) -> None:
    message = f"compat log from {version} {uuid.uuid4().hex[:8]}"
    proc = await spawn.official(version, "log", message, url=engine_proc.url)
    assert (await proc.result())["logged"] == message
    line = await wait_output(engine_proc, message, timeout=10)
    assert "u1" in line, f"the log's attribute value is missing from: {line}"


# -- state -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_increment_role(engine_proc: Any, spawn: Spawner, version: str) -> None:
    key = f"k-{prefix_of(version)}"
    proc = await spawn.official(version, "increment", "counters", key, "50", url=engine_proc.url)
    out = await proc.result()
    assert out == {"ok": 50, "failed": 0, "errors": [], "final": {"count": 50}}


@pytest.mark.parametrize("store", ["file_based", "in_memory"])
async def test_1000_concurrent_increments_from_four_workers(
    make_engine_proc: Any, spawn: Spawner, pyiii_worker: MakePyiii, store: str
) -> None:
    """Two pyiii SDK workers + official Node 0.9 and 0.22 workers, 250 increments each, all at once."""
    config = REPO_CONFIG.read_text() if store == "file_based" else IN_MEMORY_CONFIG
    engine = make_engine_proc(config).start()
    url, scope, key = engine.url, "counters", "hits"
    payload = {"scope": scope, "key": key, "ops": [{"type": "increment", "path": "count", "by": 1}]}
    # every worker connects first and fires its 250 calls at the same wall-clock moment
    start_at = time.time() + 3.0
    gate = {"III_START_AT_MS": str(int(start_at * 1000))}

    async def pyiii_increments(worker: Worker) -> list[BaseException | Any]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        calls = (worker.trigger("state::update", payload) for _ in range(250))
        return await asyncio.gather(*calls, return_exceptions=True)

    node09 = await spawn.official("node-0.9", "increment", scope, key, "250", url=url, env=gate)
    node22 = await spawn.official("node-0.22", "increment", scope, key, "250", url=url, env=gate)
    py_a, py_b = await pyiii_worker(url), await pyiii_worker(url)
    outcomes_a, outcomes_b, out09, out22 = await asyncio.gather(
        pyiii_increments(py_a), pyiii_increments(py_b), node09.result(60), node22.result(60)
    )

    for name, outcomes in (("pyiii A", outcomes_a), ("pyiii B", outcomes_b)):
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert not failures, f"{name}: {len(failures)} failed, e.g. {failures[0]!r}"
    for name, out in (("node-0.9", out09), ("node-0.22", out22)):
        assert (out["ok"], out["failed"]) == (250, 0), f"{name}: {out}"
        assert out["late_ms"] == 0, f"{name} connected too late to overlap the others: {out}"

    reader = await pyiii_worker(url)
    assert await reader.trigger("state::get", {"scope": scope, "key": key}) == {"count": 1000}

    if store == "file_based":  # and it is still 1000 after a restart
        await asyncio.to_thread(engine.stop)
        await asyncio.to_thread(engine.start)
        again = await pyiii_worker(url)
        assert await again.trigger("state::get", {"scope": scope, "key": key}) == {"count": 1000}


@pytest.mark.parametrize("version", VERSIONS)
async def test_state_trigger_events(
    engine_proc: Any, spawn: Spawner, pyiii_worker: MakePyiii, version: str
) -> None:
    url, scope = engine_proc.url, f"watched-{prefix_of(version)}"
    function_id = f"{prefix_of(version)}::on-state"
    watcher = await spawn.official(version, "state-trigger", function_id, scope, url=url)
    await watcher.ready()
    writer = await pyiii_worker(url)

    def event_count() -> int:
        return sum(1 for m in watcher.messages if "event" in m)

    async def next_event(n: int, what: str) -> dict[str, Any]:
        await watcher.wait_for(lambda _m: event_count() >= n, 10, what)
        return [m["event"] for m in watcher.messages if "event" in m][n - 1]

    await writer.trigger("state::set", {"scope": "other-scope", "key": "k1", "value": 0})
    await writer.trigger("state::set", {"scope": scope, "key": "k1", "value": {"v": 1}})
    base = {"type": "state", "scope": scope, "key": "k1"}
    assert await next_event(1, "state:created") == {
        **base,
        "event_type": "state:created",
        "old_value": None,
        "new_value": {"v": 1},
    }
    ops = [{"type": "increment", "path": "v", "by": 1}]
    await writer.trigger("state::update", {"scope": scope, "key": "k1", "ops": ops})
    assert await next_event(2, "state:updated") == {
        **base,
        "event_type": "state:updated",
        "old_value": {"v": 1},
        "new_value": {"v": 2},
    }
    await writer.trigger("state::delete", {"scope": scope, "key": "k1"})
    assert await next_event(3, "state:deleted") == {
        **base,
        "event_type": "state:deleted",
        "old_value": {"v": 2},
        "new_value": None,
    }
    await asyncio.sleep(0.2)
    assert event_count() == 3, f"unexpected extra events: {watcher.messages}"


# -- the State guide (examples/seed) -----------------------------------------------------------


def test_latest_seed_files_differ_from_the_guide_only_as_documented() -> None:
    for name in SEED_FILES:
        guide = (SEED / name).read_text()
        assert "registerFunction({ id: " in guide, f"examples/seed/{name} is no longer the guide's 0.9 form"
        latest = (SEED / "latest" / name).read_text()
        assert latest == as_latest_sdk(guide), f"latest/{name} differs in more than the import/id"


def seed_engine(make_engine_proc: Any) -> Any:
    """An engine started from the repository's iii-config.yaml (file_based, ./data/state_store.db)."""
    return make_engine_proc(REPO_CONFIG.read_text()).start()


async def run_ts_guide(
    spawn: Spawner, engine: Any, directory: Path, version: str, pyiii_worker: MakePyiii
) -> None:
    require_compat(version)
    ensure_node_modules(directory, version)
    tsx = COMPAT / version / "node_modules" / ".bin" / "tsx"
    runner = await spawn.command(
        f"{directory.name}/run-guide.mjs",
        [str(tsx), str(directory / "run-guide.mjs"), "--serve"],
        url=engine.url,
    )
    await runner.ready(timeout=45)
    steps = {m["step"]: m for m in runner.messages if "step" in m}
    for name in ("state-writer.ts", "state-reader.ts", "state-update.ts"):
        assert steps.get(name, {}).get("ok") is True, f"{name}: {steps.get(name)}\n{runner.describe()}"

    # what the writer stored: one Alice under a fresh UUID
    users = next(m["users"] for m in runner.messages if "users" in m)
    alices = [u for u in users if u.get("name") == "Alice"]
    assert len(alices) == 1, users
    user_id = alices[0]["id"]
    uuid.UUID(user_id)
    expected = {"id": user_id, "name": "Alice", "email": "alice@example.com"}
    # the update fragment recorded one login for its example id
    assert {"lastLogin", "loginCount"} <= set(users[-1]) and users[-1]["loginCount"] == 1, users

    me = await pyiii_worker(engine.url)
    assert await me.trigger("state::get", {"scope": "users", "key": user_id}) == expected
    assert await me.trigger("users::get", {"userId": user_id}) == expected  # the reader's function
    for _ in range(2):  # the update fragment's function counts logins
        assert await me.trigger("users::record-login", {"userId": user_id}) == {"updated": True}
    after = await me.trigger("users::get", {"userId": user_id})
    assert after["loginCount"] == 2 and {k: after[k] for k in expected} == expected, after
    assert after["lastLogin"].endswith("Z")

    line = await wait_output(engine, "User saved to state")
    assert user_id in line
    await wait_output(engine, "User login recorded")

    code = await runner.stop(signal.SIGTERM)
    assert code == 0, f"the guide runner exited {code}\n{runner.describe()}"


async def test_seed_guide_as_written_with_node_sdk_0_9(
    make_engine_proc: Any, spawn: Spawner, pyiii_worker: MakePyiii
) -> None:
    engine = seed_engine(make_engine_proc)
    await run_ts_guide(spawn, engine, SEED, "node-0.9", pyiii_worker)


async def test_seed_guide_latest_node_sdk_0_22(
    make_engine_proc: Any, spawn: Spawner, pyiii_worker: MakePyiii
) -> None:
    engine = seed_engine(make_engine_proc)
    await run_ts_guide(spawn, engine, SEED / "latest", "node-0.22", pyiii_worker)


async def test_seed_python_flows(make_engine_proc: Any, spawn: Spawner, pyiii_worker: MakePyiii) -> None:
    engine = seed_engine(make_engine_proc)
    proc = await spawn.command("state_flows.py", [PYTHON, str(SEED / "state_flows.py")], url=engine.url)
    await proc.finish(30)
    assert proc.returncode == 0, proc.describe()
    user = ast.literal_eval(proc.stdout_lines[-1])
    assert {k: user[k] for k in ("name", "email", "loginCount")} == {
        "name": "Alice",
        "email": "alice@example.com",
        "loginCount": 1,
    }

    me = await pyiii_worker(engine.url)
    assert await me.trigger("state::get", {"scope": "users", "key": user["id"]}) == user
    line = await wait_output(engine, "User saved to state")
    assert user["id"] in line and "users::create" in line
    assert "users::get" in await wait_output(engine, "User retrieved")

    # file_based: what was written is there after an engine restart
    await asyncio.to_thread(engine.stop)
    await asyncio.to_thread(engine.start)
    again = await pyiii_worker(engine.url)
    assert await again.trigger("state::get", {"scope": "users", "key": user["id"]}) == user
