"""The pyiii SDK's queue helpers: publish, enqueue, @subscriber, and bad data caught before sending."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyiii import IIIError, connect
from support.queue_engines import QueueEngine, adapter_block, queue_config_yaml


async def test_sdk_helpers_and_unserializable_data(tmp_path: Any) -> None:
    text = queue_config_yaml({"mail": {}}, adapter_block("in_memory", tmp_path, None, ""))
    eng = await QueueEngine(text).start()
    w = await connect(eng.url, name="sdk")
    got: list[Any] = []

    @w.subscriber("signups")
    async def welcome(data: Any) -> None:
        got.append(("welcome", data))

    @w.function("mail::send")
    async def send(data: Any) -> None:
        got.append(("mail", data["to"]))

    await w.trigger("engine::functions::list", {})
    listed = await w.trigger("engine::functions::list", {})
    assert "signups::welcome" in str(listed)  # the default id: <topic>::<handler name>
    await w.publish("signups", {"user": "ada"})
    receipt = await w.enqueue("mail::send", {"to": "ada@example.com"}, queue="mail")
    assert len(receipt) == 36
    class Order:  # a plain object: JSON has no spelling for it
        pass

    for bad in ({"order": Order()}, object(), {"n": float("nan"), "x": Order()}):
        with pytest.raises(IIIError) as err:
            await w.publish("signups", bad)
        assert err.value.code == "serialization_error"
        assert "not JSON-serializable" in err.value.message and "iii::durable::publish" in err.value.message
    with pytest.raises(IIIError) as err:
        await w.enqueue("mail::send", {"to": Order()}, queue="mail")
    assert err.value.code == "serialization_error"
    with pytest.raises(ValueError):
        await w.publish("", {})
    await asyncio.sleep(0.3)
    assert sorted(got, key=str) == [("mail", "ada@example.com"), ("welcome", {"user": "ada"})]
    await w.shutdown()
    await eng.stop()
