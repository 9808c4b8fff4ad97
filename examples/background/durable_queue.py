"""A durable queue with the pyiii SDK: the first program shown in README.md, "Background work".

Start an engine with the queue module (`pyiii serve --config
examples/background/iii-config.yaml`), then `python examples/background/durable_queue.py`
(connects to $III_URL, default ws://127.0.0.1:49134). `make example` does both.
"""

# The code below is kept exactly as README.md shows it.
# ruff: noqa: I001
# fmt: off
import asyncio
from pyiii import connect

async def main():
    iii = await connect()          # $III_URL, else ws://127.0.0.1:49134
    attempts, charged, reports = {}, [], []

    # Every message published to the topic is stored until this handler returns;
    # one that raises is delivered again after a backoff (100 ms, 200 ms, ...).
    @iii.subscriber("orders.placed", queue_config={"maxRetries": 2, "backoffDelayMs": 100})
    async def charge(order):
        attempts[order["id"]] = attempts.get(order["id"], 0) + 1
        if order["id"] == "B-2" and attempts["B-2"] == 1:
            raise RuntimeError("card network timeout")   # the retry succeeds
        if order["id"] == "B-4":
            raise RuntimeError("card declined")          # every try fails: dead-lettered
        charged.append(order["id"])

    @iii.function("reports::daily")
    async def daily_report(request):
        reports.append(request["day"])

    for order_id in ("B-1", "B-2", "B-3", "B-4"):
        await iii.publish("orders.placed", {"id": order_id})   # returns once it is on disk
    # Any function can be run through a named queue (queue_configs in the config):
    await iii.enqueue("reports::daily", {"day": "2026-05-01"}, queue="reports")

    dead = []
    for _ in range(100):                                       # wait (at most 5 s) for the work
        dead = await iii.trigger("engine::queue::dlq_messages", {"topic": "orders.placed"})
        if len(charged) == 3 and reports and attempts.get("B-4") == 3 and dead:
            break
        await asyncio.sleep(0.05)
    print("charged:", sorted(charged), "attempts:", dict(sorted(attempts.items())))
    print("reports:", reports, "dead letters:", [(d["payload"]["id"], d["error"]) for d in dead])
    await iii.shutdown()                   # (dead letters stay in the file until redriven or discarded)
    return sorted(charged) == ["B-1", "B-2", "B-3"] and reports == ["2026-05-01"] and len(dead) >= 1

if __name__ == "__main__":
    raise SystemExit(0 if asyncio.run(main()) else 1)
