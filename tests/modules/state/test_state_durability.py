"""file_based State across crashes, graceful stops and damaged files.

A real ``pyiii serve`` subprocess with the shipped config shape
(``./data/state_store.db``). What a user relies on: a write the engine
acknowledged is there after SIGKILL or SIGTERM and a restart; list order
survives; a damaged store stops the engine (exit 2, file named) and is left
byte-for-byte untouched. Spec: docs/state.md §6.1, §9.1, §9.4 (the reference loses
up to 5 s of acknowledged writes and overwrites unreadable files; pyiii
promises not to, see docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from support.jsonvalues import same_json  # tests/support, on sys.path via tests/conftest.py

NEW_SHAPE_CONFIG = """\
workers:
  - name: iii-state
    config:
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/state_store.db
"""
# The repository's seed config (the State guide's old modules/class shape).
SEED_CONFIG = (Path(__file__).resolve().parents[3] / "iii-config.yaml").read_text(encoding="utf-8")
CONFIGS = {"new-shape": NEW_SHAPE_CONFIG, "seed-old-shape": SEED_CONFIG}

KEYS_PER_ROUND = 2000
IN_FLIGHT = 64


def value_for(round_name: str, i: int) -> dict[str, Any]:
    return {
        "round": round_name,
        "i": i,
        "half": i + 0.5,
        "whole": 2.0,
        "big": 2**63 + i,
        "pad": "x" * (i % 97),
    }


def store_file(workdir: Path) -> Path:
    """The database behind ``file_path: ./data/state_store.db``.

    That path is the SQLite file itself, unless it is an existing directory
    (the reference's layout), in which case the database lives inside it.
    """
    path = workdir / "data" / "state_store.db"
    if path.is_dir():
        inside = [p for p in path.iterdir() if p.is_file() and not p.name.endswith(("-wal", "-shm", ".bin"))]
        assert len(inside) == 1, f"cannot tell which file in {path} is the store: {inside}"
        return inside[0]
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_exit(proc: subprocess.Popen[str] | None, timeout: float = 15.0) -> int:
    assert proc is not None
    return proc.wait(timeout)


async def call_until_signalled(
    connect: Callable[[str], Any],
    url: str,
    calls: list[tuple[str, dict[str, Any]]],
    signal_after: int,
    send_signal: Callable[[], None],
) -> tuple[set[int], set[int], int]:
    """Send ``calls`` IN_FLIGHT at a time; signal the engine after
    ``signal_after`` acknowledgements. Returns (indexes of the acknowledged
    calls, indexes of the calls never sent, calls in flight when the signal
    was sent). Calls in neither set were sent but not answered."""
    client = await connect(url)
    acked: set[int] = set()
    unsent: set[int] = set()
    in_flight_at_signal = -1
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        nonlocal in_flight_at_signal
        function_id, payload = calls[i]
        async with sem:
            if client.closed:
                unsent.add(i)
                return
            try:
                status, _ = await client.call(function_id, payload, timeout=20)
            except websockets.ConnectionClosed:  # raised by the send itself
                unsent.add(i)
                return
            except ConnectionError:  # sent; the connection died before the answer
                return
        if status != "ok":
            return
        acked.add(i)
        if len(acked) == signal_after:
            in_flight_at_signal = await client.in_flight_soon()
            send_signal()

    try:
        await asyncio.gather(*(one(i) for i in range(len(calls))))
    finally:
        await client.close()
    return acked, unsent, in_flight_at_signal


async def write_until_signalled(
    connect: Callable[[str], Any],
    url: str,
    round_name: str,
    signal_after: int,
    send_signal: Callable[[], None],
) -> tuple[dict[str, Any], int]:
    """Set KEYS_PER_ROUND distinct keys; returns (acknowledged key -> value,
    number of calls sent but never answered)."""
    calls = [
        ("state::set", {"scope": "dur", "key": f"{round_name}-{i:05d}", "value": value_for(round_name, i)})
        for i in range(KEYS_PER_ROUND)
    ]
    acked, unsent, _ = await call_until_signalled(connect, url, calls, signal_after, send_signal)
    unanswered = len(calls) - len(acked) - len(unsent)
    return {calls[i][1]["key"]: calls[i][1]["value"] for i in acked}, unanswered


async def verify_round(
    connect: Callable[[str], Any], url: str, round_name: str, acked: dict[str, Any]
) -> int:
    """Every acknowledged key holds exactly its value; unacknowledged keys hold
    their value or nothing (never anything else). Returns how many are present."""
    client = await connect(url)
    sem = asyncio.Semaphore(IN_FLIGHT)
    problems: list[str] = []
    present = 0

    async def check(i: int) -> None:
        nonlocal present
        key = f"{round_name}-{i:05d}"
        async with sem:
            status, got = await client.call("state::get", {"scope": "dur", "key": key})
        assert status == "ok", got
        if got is not client.MISSING:
            present += 1
            if not same_json(got, value_for(round_name, i)):
                problems.append(f"{key} holds {json.dumps(got)[:200]}")
        elif key in acked:
            problems.append(f"{key} was acknowledged but is gone")

    try:
        await asyncio.gather(*(check(i) for i in range(KEYS_PER_ROUND)))
    finally:
        await client.close()
    assert not problems, f"{len(problems)} problems after restart, e.g. {problems[:5]}"
    return present


# --------------------------------------------------------------------------- crash


async def test_acknowledged_writes_survive_sigkill(make_engine_proc: Any, connect_client: Any) -> None:
    eng = make_engine_proc(NEW_SHAPE_CONFIG).start()
    rounds: dict[str, dict[str, Any]] = {}
    for round_name, kill_after in (("r1", 1000), ("r2", 150), ("r3", 1850)):
        proc = eng.proc
        acked, in_flight = await write_until_signalled(
            connect_client, eng.url, round_name, kill_after, lambda p=proc: p.send_signal(signal.SIGKILL)
        )
        assert wait_exit(proc) == -signal.SIGKILL
        assert len(acked) >= kill_after, f"{round_name}: only {len(acked)} acknowledged before the kill"
        assert in_flight > 0, "the kill should land while writes are in flight (sent, unanswered)"
        assert len(acked) < KEYS_PER_ROUND, "the engine finished before it was killed"
        rounds[round_name] = acked

        eng.start()
        for name, acked_keys in rounds.items():  # this round and every earlier one
            present = await verify_round(connect_client, eng.url, name, acked_keys)
            assert present >= len(acked_keys)

    # Acknowledged deletes stay deleted; deletes never sent changed nothing.
    r1 = rounds["r1"]
    doomed = sorted(r1)
    proc = eng.proc
    acked_deletes, unsent, _ = await call_until_signalled(
        connect_client,
        eng.url,
        [("state::delete", {"scope": "dur", "key": key}) for key in doomed],
        len(doomed) // 2,
        lambda p=proc: p.send_signal(signal.SIGKILL),
    )
    assert wait_exit(proc) == -signal.SIGKILL
    assert unsent and len(doomed) - len(acked_deletes) - len(unsent) > 0, "no delete was in flight"
    eng.start()
    c = await connect_client(eng.url)
    for i, key in enumerate(doomed):
        status, got = await c.call("state::get", {"scope": "dur", "key": key})
        if i in acked_deletes:
            assert (status, got) == ("ok", c.MISSING), f"acknowledged delete of {key} was undone"
        elif i in unsent:
            assert status == "ok" and same_json(got, r1[key]), f"{key} changed without a call: {got}"
        else:  # in flight at the kill: either outcome, but nothing else
            assert status == "ok" and (got is c.MISSING or same_json(got, r1[key])), got
    await c.close()

    # Acknowledged increments are all counted.
    proc = eng.proc
    inc = {"scope": "dur", "key": "counter", "ops": [{"type": "increment", "path": "n", "by": 1}]}
    acked_incs, unsent, _ = await call_until_signalled(
        connect_client,
        eng.url,
        [("state::update", inc)] * 1000,
        500,
        lambda p=proc: p.send_signal(signal.SIGKILL),
    )
    assert wait_exit(proc) == -signal.SIGKILL
    assert 1000 - len(acked_incs) - len(unsent) > 0, "no increment was in flight"
    eng.start()
    c = await connect_client(eng.url)
    counter = await c.ok("state::get", {"scope": "dur", "key": "counter"})
    await c.close()
    assert len(acked_incs) <= counter["n"] <= 1000, (
        f"{len(acked_incs)} increments acknowledged, counter {counter}"
    )
    eng.stop()


async def test_acknowledged_writes_survive_sigterm(make_engine_proc: Any, connect_client: Any) -> None:
    eng = make_engine_proc(NEW_SHAPE_CONFIG).start()
    proc = eng.proc
    acked, _ = await write_until_signalled(
        connect_client, eng.url, "term", 1000, lambda: proc.send_signal(signal.SIGTERM)
    )
    # The stop cut the stream of writes short. A graceful stop may answer every
    # write it had received (unlike SIGKILL, none need be left unanswered).
    assert len(acked) < KEYS_PER_ROUND
    assert wait_exit(proc) == 0, eng.output
    assert "Traceback" not in eng.output, eng.output
    assert len(acked) >= 1000

    eng.start()
    present = await verify_round(connect_client, eng.url, "term", acked)
    assert present >= len(acked)
    eng.stop()


# --------------------------------------------------------------------------- order


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
async def test_restart_keeps_values_and_list_order(
    make_engine_proc: Any, connect_client: Any, config: str
) -> None:
    eng = make_engine_proc(CONFIGS[config]).start()
    c = await connect_client(eng.url)
    for key, value in [("a", 1), ("b", 2.0), ("c", {"n": None}), ("d", 18446744073709551615), ("e", "e")]:
        await c.ok("state::set", {"scope": "order", "key": key, "value": value})
    await c.ok("state::set", {"scope": "order", "key": "b", "value": 3.0})  # keeps its place
    await c.ok("state::delete", {"scope": "order", "key": "a"})
    await c.ok("state::set", {"scope": "order", "key": "a", "value": [1, 2]})  # moves to the end
    await c.ok(
        "state::update", {"scope": "order", "key": "f", "ops": [{"type": "increment", "path": "", "by": 5}]}
    )
    await c.ok("state::set", {"scope": "order", "key": "g", "value": None})
    await c.ok("state::set", {"scope": "other", "key": "x", "value": "y"})
    await c.ok("state::set", {"scope": "emptied", "key": "x", "value": "y"})
    await c.ok("state::delete", {"scope": "emptied", "key": "x"})
    expected_list = [3.0, {"n": None}, 18446744073709551615, "e", [1, 2], 5, None]
    listed = await c.ok("state::list", {"scope": "order"})
    assert same_json(listed, expected_list)
    groups = await c.ok("state::list_groups", {})
    assert groups == {"groups": ["order", "other"]}
    await c.close()

    for stop, code in ((signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)):
        assert eng.stop(stop) == code, eng.output
        eng.start()
        c = await connect_client(eng.url)
        assert same_json(await c.ok("state::list", {"scope": "order"}), expected_list), stop
        assert await c.ok("state::list_groups", {}) == groups
        stored_null = await c.call_frame("state::get", {"scope": "order", "key": "g"})
        assert "result" in stored_null and stored_null["result"] is None
        assert same_json(await c.ok("state::get", {"scope": "order", "key": "b"}), 3.0)
        await c.close()

    # Order keeps evolving correctly after a reload.
    c = await connect_client(eng.url)
    await c.ok("state::delete", {"scope": "order", "key": "c"})
    await c.ok("state::set", {"scope": "order", "key": "c", "value": "c again"})
    await c.ok("state::set", {"scope": "order", "key": "d", "value": 0})
    await c.close()
    eng.stop(signal.SIGKILL)
    eng.start()
    c = await connect_client(eng.url)
    assert same_json(await c.ok("state::list", {"scope": "order"}), [3.0, 0, "e", [1, 2], 5, None, "c again"])
    await c.close()
    eng.stop()


# --------------------------------------------------------------------------- corruption


def _damage(path: Path, how: str) -> None:
    rng = random.Random(how)
    data = bytearray(path.read_bytes()) if path.exists() else bytearray()
    if how == "garbage":
        data = bytearray(rng.randbytes(8192))
    elif how == "pages":  # header and first page intact, the rest scrambled
        for i in range(4096, len(data)):
            data[i] = rng.randrange(256)
    elif how == "truncated":
        data = data[: len(data) // 2 + 100]
    elif how == "zeroed-schema":
        data[100:4096] = bytes(4096 - 100)
    else:
        raise AssertionError(how)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["garbage", "pages", "truncated", "zeroed-schema"])
async def test_damaged_store_stops_the_engine_and_is_left_untouched(
    make_engine_proc: Any, connect_client: Any, tmp_path: Path, how: str
) -> None:
    eng = make_engine_proc(SEED_CONFIG)
    if how == "garbage":
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "state_store.db").write_bytes(b"")
    else:
        eng.start()
        c = await connect_client(eng.url)
        await asyncio.gather(
            *(
                c.ok("state::set", {"scope": f"s{i % 7}", "key": f"k{i}", "value": {"i": i, "pad": "p" * 50}})
                for i in range(300)
            )
        )
        await c.close()
        assert eng.stop() == 0
    db = store_file(tmp_path)
    assert db.is_file()
    _damage(db, how)
    digest = sha256(db)
    listing = sorted(p.name for p in db.parent.iterdir())

    with contextlib.suppress(RuntimeError):  # "engine did not start"
        eng.start()
    rc = wait_exit(eng.proc)
    out = eng.output
    assert rc == 2, f"exit code {rc}, output:\n{out}"
    assert str(db) in out or str(db.relative_to(tmp_path)) in out, f"the message does not name {db}:\n{out}"
    assert sha256(db) == digest, "the damaged store was modified"
    assert sorted(p.name for p in db.parent.iterdir()) == listing, (
        "files appeared or vanished next to the store"
    )


async def test_corrupt_store_is_reported_every_time_not_replaced(
    make_engine_proc: Any, tmp_path: Path
) -> None:
    """Starting twice does not 'repair' the file by overwriting it (docs/state.md §9.4)."""
    (tmp_path / "data").mkdir()
    db = tmp_path / "data" / "state_store.db"
    db.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    digest = sha256(db)
    for _ in range(2):
        eng = make_engine_proc(NEW_SHAPE_CONFIG)
        with contextlib.suppress(RuntimeError):
            eng.start()
        assert wait_exit(eng.proc) == 2, eng.output
        assert "state_store.db" in eng.output
        assert sha256(db) == digest
