"""HTTP: a request -> the engine's iii-http -> a worker's function -> the response.

    python benchmarks/http_serving.py [--seconds 2]        # = run.py --only http

Three servers answer ``POST /echo`` with a small JSON body (``{"ok": true, "echo":
<the request's JSON>}``), each in its own process(es), all up at once:

* granian alone (``http_libraries.py``'s candidate, RSGI on uvloop): the ceiling, the
  library the engine embeds doing the same work by itself;
* FastAPI on uvicorn (httptools, uvloop), ``async def echo(body: dict) -> dict``: what a
  Python user would write instead of an engine, the work done in-process;
* pyiii: ``pyiii serve`` with iii-http, and a pyiii SDK worker process serving
  ``@iii.http("POST", "/echo")``; every request crosses the engine to the worker and back.

wrk (Debian package, one thread, keep-alive) drives 1 and 64 connections; the three
servers are measured in alternating windows (A B C, C B A) so background load hits
them alike. ``srv`` is the CPU of the server processes, ``cli`` wrk's own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, cpu_seconds, engine, free_port, process, progress, section_main, with_ratio
from wrk import BODY, WrkResult, require_wrk, run_wrk

SECTION = "http"
CONNECTIONS = (1, 64)
PATH = "/echo"
ROUNDS = 2

FASTAPI_APP = """
import sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()

@app.post("/echo")
async def echo(body: dict) -> dict:
    return {"ok": True, "echo": body}

print("fastapi ready", flush=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning", lifespan="off")
"""

WORKER = """
import sys
import uvloop
from pyiii import HttpRequest, connect

async def main():
    iii = await connect(sys.argv[1], name="bench-http-worker")

    @iii.http("POST", "/echo")
    async def echo(req: HttpRequest):
        return {"ok": True, "echo": req.body}

    print("http worker ready", flush=True)
    await iii.serve_forever()

uvloop.run(main())
"""

ENGINE_CONFIG = "workers:\n  - name: iii-http\n    config: {{port: {port}}}\n"


def ceiling_name(n: int) -> str:
    return f"granian alone answers the JSON (ceiling), {n} conns"


def fastapi_name(n: int) -> str:
    return f"FastAPI + uvicorn, in-process, {n} conns"


def pyiii_name(n: int) -> str:
    return f"pyiii: HTTP -> engine -> worker function -> HTTP, {n} conns"


def versus_fastapi_name(n: int) -> str:
    return f"pyiii HTTP vs FastAPI + uvicorn, {n} conns"


@dataclass
class Server:
    key: str
    port: int
    pids: list[int]


def wait_answers(port: int, proc: subprocess.Popen[str] | None = None, timeout: float = 30.0) -> None:
    """Wait until ``POST /echo`` answers 200 (for pyiii: the worker's route is bound)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{PATH}",
            data=BODY.encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                answer = json.loads(resp.read())
                if answer == {"ok": True, "echo": json.loads(BODY)}:
                    return
                last = f"unexpected answer {answer!r}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"POST http://127.0.0.1:{port}{PATH} never answered 200 within {timeout:g}s: {last}")


@contextmanager
def servers() -> Iterator[list[Server]]:
    from http_libraries import start as start_library

    with ExitStack() as stack:
        out = []
        port = free_port()
        granian = start_library("granian", port)
        stack.callback(lambda: (granian.terminate(), granian.wait(10)))
        wait_answers(port, None)
        out.append(Server("granian", port, [granian.pid]))

        port = free_port()
        argv = [sys.executable, "-c", FASTAPI_APP, str(port)]
        fastapi = stack.enter_context(process(argv, "fastapi ready"))
        wait_answers(port, None)
        out.append(Server("fastapi", port, [fastapi.pid]))

        port, ws_port = free_port(), free_port()
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        eng = stack.enter_context(engine(ws_port, tmp, ENGINE_CONFIG.format(port=port)))
        url = f"ws://127.0.0.1:{ws_port}"
        worker = stack.enter_context(process([sys.executable, "-c", WORKER, url], "http worker ready"))
        wait_answers(port, None)
        out.append(Server("pyiii", port, [eng.pid, worker.pid]))
        yield out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Tally:
    results: list[WrkResult]
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0


def _measure(server: Server, conns: int, seconds: float, tally: _Tally) -> None:
    srv0 = sum(cpu_seconds(p) for p in server.pids)
    cli0 = _children_cpu()
    start = time.perf_counter()
    result = run_wrk(server.port, PATH, conns, seconds)
    tally.seconds += time.perf_counter() - start
    tally.server_cpu += sum(cpu_seconds(p) for p in server.pids) - srv0
    tally.client_cpu += _children_cpu() - cli0
    tally.results.append(result)


def _row(name: str, tally: _Tally, wall_s: float) -> Row:
    rs = tally.results
    rps = sum(r.requests for r in rs) / wall_s
    bad = sum(r.errors + r.non_2xx for r in rs)
    return Row(
        name,
        rps,
        1000 * sum(r.p50_ms for r in rs) / len(rs),
        1000 * max(r.p99_ms for r in rs),
        section=SECTION,
        # wrk's run includes its own start-up; CPU is spread over the whole run.
        server_cpu=tally.server_cpu / tally.seconds,
        client_cpu=tally.client_cpu / tally.seconds,
        note=f"{bad} errors or non-2xx" if bad else "",
    )


def http_rows(seconds: float) -> list[Row]:
    require_wrk()
    window = max(1, round(seconds / ROUNDS))
    rows: list[Row] = []
    with servers() as running:
        progress("http: warm-up (each server 1 s at 64 connections)")
        for server in running:
            run_wrk(server.port, PATH, 64, 1)
        for conns in CONNECTIONS:
            tallies = {s.key: _Tally([]) for s in running}
            progress(f"http, {conns} conns: {len(running)} servers, {ROUNDS} alternating {window} s windows")
            for r in range(ROUNDS):
                for server in running if r % 2 == 0 else reversed(running):
                    _measure(server, conns, window, tallies[server.key])
            wall = ROUNDS * window  # wrk's -d; its requests/sec uses the same duration
            ceiling = _row(ceiling_name(conns), tallies["granian"], wall)
            fastapi = _row(fastapi_name(conns), tallies["fastapi"], wall)
            ours = _row(pyiii_name(conns), tallies["pyiii"], wall)
            for row in (ceiling, fastapi, ours):
                progress(f"{row.name}: {row.ops_per_s:.0f} req/s, p50 {row.p50_us:.0f} µs")
            rows += [ceiling, fastapi, with_ratio(ours, ceiling)]
            versus = Row(**{**ours.__dict__, "name": versus_fastapi_name(conns), "section": "comparisons"})
            rows.append(with_ratio(versus, fastapi))
    order = {n: i for i, n in enumerate(
        [ceiling_name(1), ceiling_name(64), fastapi_name(1), fastapi_name(64), pyiii_name(1), pyiii_name(64),
         versus_fastapi_name(1), versus_fastapi_name(64)]
    )}  # fmt: skip
    return sorted(rows, key=lambda r: order[r.name])


def main() -> None:
    section_main("http", __doc__)


if __name__ == "__main__":
    main()
