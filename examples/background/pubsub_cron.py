"""Pub/sub and cron with the pyiii SDK: the second program shown in README.md, "Background work".

Start an engine with the pubsub and cron modules (`pyiii serve --config
examples/background/iii-config.yaml`), then `python examples/background/pubsub_cron.py`
(connects to $III_URL, default ws://127.0.0.1:49134). `make example` does both.
"""

# The code below is kept exactly as README.md shows it.
# ruff: noqa: I001
# fmt: off
import asyncio
from pyiii import connect

async def main():
    iii = await connect()          # $III_URL, else ws://127.0.0.1:49134
    emailed, counted, ticks = [], [], []

    @iii.on_event("orders.shipped")          # every subscriber gets every message
    async def send_email(order):
        emailed.append(order["id"])

    @iii.on_event("orders.shipped")
    def count_shipment(order):
        counted.append(order["id"])

    @iii.cron("* * * * * *")                 # sec min hour day month weekday: every second
    def tick(event):
        ticks.append(event["scheduled_time"])

    for order_id in ("A-1", "A-2", "A-3"):
        await iii.publish_event("orders.shipped", {"id": order_id})
    await asyncio.sleep(2.5)                  # the cron job runs twice or three times

    print("emailed:", sorted(emailed), "counted:", sorted(counted))
    print("cron ran at:", ", ".join(ticks))
    await iii.shutdown()
    return sorted(emailed) == sorted(counted) == ["A-1", "A-2", "A-3"] and len(ticks) >= 2

if __name__ == "__main__":
    raise SystemExit(0 if asyncio.run(main()) else 1)
