"""`make example`'s HTTP flow: serve todos.py, then send requests.sh's curl lines as a user would.

Runs todos.py (the README's program) against $III_URL, waits until its four routes
are bound, runs each curl line of requests.sh (the README's) with the port taken from
$III_HTTP_PORT, prints what it printed beside what the README shows, and stops the
program with Ctrl-C (SIGINT). Exits 1 if any output differs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyiii.sdk import sync

HERE = Path(__file__).resolve().parent
README_PORT = "3111"
ROUTES = 4


def bound_routes() -> int:
    listed = sync.trigger("engine::registered-triggers::list", {"trigger_type": "http"})
    return sum(1 for t in listed["registered_triggers"] if t["active"])


def main() -> int:
    port = os.environ.get("III_HTTP_PORT", README_PORT)
    server = subprocess.Popen([sys.executable, str(HERE / "todos.py")])
    try:
        deadline = time.monotonic() + 20
        while bound_routes() < ROUTES:
            if server.poll() is not None or time.monotonic() > deadline:
                print("todos.py did not bind its routes")
                return 1
            time.sleep(0.1)
        lines = [ln for ln in (HERE / "requests.sh").read_text().splitlines() if ln.strip()]
        ok = True
        for command, shown in zip(lines[::2], lines[1::2], strict=True):
            run = command.replace(f"localhost:{README_PORT}/", f"localhost:{port}/")
            done = subprocess.run(["bash", "-c", run], capture_output=True, text=True, timeout=30)
            out = done.stdout.strip()
            same = out == shown.removeprefix("# ")
            ok &= same
            print(f"$ {command}\n{out}" + ("" if same else f"\n  ^ the README shows: {shown[2:]}"))
        return 0 if ok else 1
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        sync.shutdown()


if __name__ == "__main__":
    sys.exit(main())
