"""README "Streams": a function updates an item, a WebSocket client watches it change.

Run against an engine started with examples/streams/iii-config.yaml (`make example` does).
The client is any WebSocket client; here the `websockets` package (pip install websockets).
"""

import asyncio
import json
import os

import websockets

from pyiii import connect

STREAM_URL = os.environ.get("III_STREAM_URL", "ws://127.0.0.1:3112")
JOB = {"stream_name": "jobs", "group_id": "user-1", "item_id": "job-7"}


async def main():
    iii = await connect()  # $III_URL, else ws://127.0.0.1:49134

    @iii.function("jobs::step")
    async def step(_):
        # One atomic update: every client watching the group gets the new value.
        ops = [{"type": "increment", "path": "done", "by": 1}]
        return await iii.trigger("stream::update", {**JOB, "ops": ops})

    await iii.trigger("stream::set", {**JOB, "data": {"done": 0, "total": 3}})
    seen = []
    async with websockets.connect(STREAM_URL) as client:
        join = {"subscriptionId": "w1", "streamName": "jobs", "groupId": "user-1"}
        await client.send(json.dumps({"type": "join", "data": join}))
        sync = json.loads(await client.recv())  # first the group as it is now
        print("sync:", sync["event"]["data"])
        for _ in range(3):
            await iii.trigger("jobs::step", {})
            change = json.loads(await client.recv())  # then one frame per change
            print(change["event"]["type"], change["id"], change["event"]["data"])
            seen.append(change["event"]["data"]["done"])
    await iii.shutdown()
    return seen == [1, 2, 3]


if __name__ == "__main__":
    raise SystemExit(0 if asyncio.run(main()) else 1)
