"""A real page in headless Chromium that joins a stream group and shows its items.

Run with the browser venv's Python (scripts/install-compat.sh browser):
    browser_board.py STREAM_URL
Prints {"shown": [...]} (the list items' text, as the page shows them) each time the
page re-renders, and {"ready": true} once the page is open; exits when stdin closes.
"""

import asyncio
import json
import sys

from playwright.async_api import async_playwright

PAGE = """<!doctype html>
<html><body>
<h1>Board</h1>
<ul id="items"></ul>
<script>
const items = new Map();
function render() {
  const ul = document.getElementById("items");
  ul.replaceChildren(...[...items.keys()].sort().map((id) => {
    const li = document.createElement("li");
    li.textContent = id + ": " + items.get(id).text;
    return li;
  }));
  window.rendered([...ul.children].map((li) => li.textContent));
}
const ws = new WebSocket(STREAM_URL);
ws.onopen = () => ws.send(JSON.stringify({
  type: "join", data: {subscriptionId: "page", streamName: "board", groupId: "g1"},
}));
ws.onmessage = (message) => {
  const frame = JSON.parse(message.data);
  const event = frame.event;
  if (event.type === "sync") { items.clear(); for (const item of event.data) items.set(item.id, item); }
  else if (event.type === "create" || event.type === "update") items.set(frame.id, event.data);
  else if (event.type === "delete") items.delete(frame.id);
  render();
};
</script>
</body></html>
"""


async def main(stream_url: str) -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = await browser.new_page()
        await page.expose_function("rendered", lambda shown: print(json.dumps({"shown": shown}), flush=True))
        await page.set_content(PAGE.replace("STREAM_URL", json.dumps(stream_url)))
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
