"""The pyiii SDK against a real engine process: the flows a user runs first."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pyiii import IIIError, Logger, connect
from support.engines import sdk_worker  # tests/support, on sys.path via tests/conftest.py

WORKER_A = """
import asyncio, sys, time
from pyiii import connect, Logger

async def main():
    w = await connect(sys.argv[1], name="worker-a")
    log = Logger()

    @w.function("math::add")
    def add(p):
        return {"c": p["a"] + p["b"]}

    @w.function("math::boom")
    def boom(p):
        raise ValueError("the handler said no")

    @w.function("math::slow")
    async def slow(p):
        await asyncio.sleep(30)

    @w.function("math::log")
    def say(p):
        log.info("adding numbers", {"userId": p["userId"]})
        return True

    await asyncio.sleep(0.1)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_worker_a(tmp_path: Path, url: str) -> subprocess.Popen[str]:
    script = tmp_path / "worker_a.py"
    script.write_text(WORKER_A)
    proc = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


async def call_until_ok(worker: Any, function_id: str, payload: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await worker.trigger(function_id, payload, timeout_ms=2000)
        except IIIError as err:
            if time.monotonic() > deadline:
                raise AssertionError(f"{function_id} never succeeded; last error {err.code}") from err
            await asyncio.sleep(0.1)


async def test_two_workers_call_each_other(engine_proc: Any, tmp_path: Path) -> None:
    a = start_worker_a(tmp_path, engine_proc.url)
    try:
        b = await connect(engine_proc.url, name="worker-b")
        assert await b.trigger("math::add", {"a": 2, "b": 3}) == {"c": 5}
        with pytest.raises(IIIError) as failed:
            await b.trigger("math::boom", {})
        assert failed.value.code == "invocation_failed"
        assert "the handler said no" in failed.value.message
        with pytest.raises(IIIError) as missing:
            await b.trigger("math::nope", {})
        assert missing.value.code == "function_not_found"
        await b.shutdown()
    finally:
        a.kill()
        a.wait()


async def test_caller_learns_within_a_second_that_the_worker_died(engine_proc: Any, tmp_path: Path) -> None:
    a = start_worker_a(tmp_path, engine_proc.url)
    b = await connect(engine_proc.url, name="worker-b")
    try:
        call = asyncio.ensure_future(b.trigger("math::slow", {}, timeout_ms=30_000))
        await asyncio.sleep(0.3)
        killed_at = time.monotonic()
        a.kill()
        with pytest.raises(IIIError) as stopped:
            await call
        assert stopped.value.code == "invocation_stopped"
        assert time.monotonic() - killed_at < 1.0
    finally:
        a.kill()
        a.wait()
        await b.shutdown()


async def test_worker_comes_back_by_itself_after_an_engine_restart(engine_proc: Any, tmp_path: Path) -> None:
    a = start_worker_a(tmp_path, engine_proc.url)
    try:
        assert engine_proc.stop() == 0
        engine_proc.start()
        b = await connect(engine_proc.url, name="worker-b")
        # Worker A's code does not run again: its SDK reconnects and re-registers.
        assert await call_until_ok(b, "math::add", {"a": 1, "b": 1}) == {"c": 2}
        await b.shutdown()
        assert a.poll() is None
    finally:
        a.kill()
        a.wait()


async def test_logger_lines_reach_the_engine_console(engine_proc: Any, tmp_path: Path) -> None:
    a = start_worker_a(tmp_path, engine_proc.url)
    try:
        b = await connect(engine_proc.url, name="worker-b")
        assert await b.trigger("math::log", {"userId": "u-42"}) is True
        assert await asyncio.to_thread(engine_proc.wait_for_output, "adding numbers")
        line = next(x for x in engine_proc.output.splitlines() if "adding numbers" in x)
        assert "math::log" in line and "u-42" in line and "INFO" in line
        # A Logger in the test process works the same way.
        Logger().warn("from the test process", {"n": 7})
        assert await asyncio.to_thread(engine_proc.wait_for_output, "from the test process")
        await b.shutdown()
    finally:
        a.kill()
        a.wait()


def test_a_plain_script_can_call_without_asyncio(engine_proc: Any) -> None:
    script = (
        "from pyiii import register_worker\n"
        f"w = register_worker({engine_proc.url!r})\n"
        "w.trigger_sync('state::set', {'scope': 's', 'key': 'k', 'value': 41})\n"
        "print(w.trigger_sync('state::get', {'scope': 's', 'key': 'k'}) + 1)\n"
        "w.shutdown_sync()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


# --- serving until stopped ------------------------------------------------------------

SERVE_SYNC = """
from pyiii import register_worker
iii = register_worker(name="served")

@iii.function("serve::add")
def add(payload):
    return {"c": payload["a"] + payload["b"]}

@iii.function("serve::quit")
def quit(payload):
    iii.shutdown_sync()

iii.run()
print("run returned", flush=True)
"""

SERVE_ASYNC = """
import asyncio
from pyiii import connect

async def main():
    iii = await connect(name="served")

    @iii.function("serve::add")
    async def add(payload):
        return {"c": payload["a"] + payload["b"]}

    @iii.function("serve::quit")
    async def quit(payload):
        asyncio.get_running_loop().call_later(0.05, asyncio.ensure_future, iii.shutdown())

    await iii.serve_forever()
    print("serve_forever returned", flush=True)

asyncio.run(main())
"""


def start_server(tmp_path: Path, url: str, source: str) -> subprocess.Popen[str]:
    script = tmp_path / "served.py"
    script.write_text(source)
    env = {**os.environ, "III_URL": url}
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.parametrize("style", ["run", "serve_forever"])
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, "shutdown"])
async def test_a_worker_serves_until_ctrl_c_sigterm_or_shutdown(
    engine: str, tmp_path: Path, style: str, how: Any
) -> None:
    served = start_server(tmp_path, engine, SERVE_SYNC if style == "run" else SERVE_ASYNC)
    try:
        async with sdk_worker(engine, "caller") as caller:
            assert await call_until_ok(caller, "serve::add", {"a": 2, "b": 3}) == {"c": 5}
            await asyncio.sleep(0.3)  # still serving a moment later
            assert served.poll() is None
            assert await caller.trigger("serve::add", {"a": 1, "b": 1}) == {"c": 2}
            if how == "shutdown":
                await caller.trigger("serve::quit", {}, action={"type": "void"})
            else:
                served.send_signal(how)
            out, err = await asyncio.to_thread(served.communicate, timeout=10)
    finally:
        if served.poll() is None:
            served.kill()
            served.communicate()
    assert served.returncode == 0, err
    assert out.strip() == f"{style} returned"
    assert "Traceback" not in err, err


# --- triggers nobody can fire ---------------------------------------------------------


async def test_sdk_warns_when_no_module_provides_a_trigger_type(
    engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyiii.sdk")
    async with sdk_worker(engine, "triggers") as w:
        w.register_function("on::thing", lambda data: None)
        w.register_trigger({"type": "http", "function_id": "on::thing", "config": {"api_path": "/x"}})
        w.register_trigger({"type": "cron", "function_id": "on::thing", "config": {"expression": "* * *"}})
        w.register_trigger({"type": "state", "function_id": "on::thing", "config": {"scope": "s"}})
        w.register_trigger({"type": "my-own-type", "function_id": "on::thing", "config": {}})
        deadline = time.monotonic() + 5
        while len(sdk_warnings(caplog)) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # and nothing more arrives
    lines = sdk_warnings(caplog)
    assert len(lines) == 3, lines
    http, cron, own = sorted(lines, key=lambda line: ("'http'" not in line, "'cron'" not in line))
    assert "no trigger type 'http'" in http and "on::thing" in http
    assert "the iii-http module: enable it" in http
    assert "no trigger type 'cron'" in cron and "iii-cron" in cron
    assert "'my-own-type'" in own and "once a worker registers" in own
    assert not any("'state'" in line for line in lines)


def sdk_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [r.getMessage() for r in caplog.records if r.name == "pyiii.sdk"]
    return [m for m in messages if "trigger type" in m]
