"""The State guide's three flows (write, read, atomic update) with the pyiii SDK.

Start an engine (`make run`), then: `python examples/seed/state_flows.py`
(connects to $III_URL, default ws://127.0.0.1:49134). This is the program shown in
README.md, "Sharing state between functions".
"""

# The code below is kept exactly as README.md shows it.
# ruff: noqa: E401, I001
# fmt: off
import asyncio, uuid
from pyiii import connect, Logger

async def main():
    iii = await connect()          # $III_URL, else ws://127.0.0.1:49134
    logger = Logger()

    @iii.function("users::create")       # 1. write state
    async def create(inp):
        user_id = str(uuid.uuid4())
        user = {"id": user_id, "name": inp["name"], "email": inp["email"]}
        await iii.trigger("state::set", {"scope": "users", "key": user_id, "value": user})
        logger.info("User saved to state", {"userId": user_id})
        return {"userId": user_id}

    @iii.function("users::get")          # 2. read state
    async def get(inp):
        user = await iii.trigger("state::get", {"scope": "users", "key": inp["userId"]})
        logger.info("User retrieved", {"userId": inp["userId"]})
        return user

    @iii.function("users::record-login")  # 3. atomic update
    async def record_login(inp):
        await iii.trigger("state::update", {
            "scope": "users", "key": inp["userId"],
            "ops": [{"type": "set", "path": "lastLogin", "value": "2026-01-01T00:00:00Z"},
                    {"type": "increment", "path": "loginCount", "by": 1}],
        })
        logger.info("User login recorded", {"userId": inp["userId"]})
        return {"updated": True}

    created = await iii.trigger("users::create", {"name": "Alice", "email": "alice@example.com"})
    await iii.trigger("users::record-login", {"userId": created["userId"]})
    user = await iii.trigger("users::get", {"userId": created["userId"]})
    print(user)                 # {'id': ..., 'name': 'Alice', ..., 'loginCount': 1}
    await iii.shutdown()

asyncio.run(main())
