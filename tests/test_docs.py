"""The README's examples work as written: its configs parse, its Python programs run."""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pyiii.config import parse_config
from support.engines import free_port

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", TEXT, flags=re.S)
PY_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
SNIPPET_TIMEOUT_S = 30
# Programs of these sections run against their own engine config (the default
# engine has no queue module); every other block runs against the default engine.
SECTION_CONFIGS = {"Background work": README.parent / "examples" / "background" / "iii-config.yaml"}


def unexpected_tracebacks(err: str, block: str) -> list[str]:
    """Tracebacks in ``err`` other than those of exceptions the block raises on purpose.

    A handler that raises ``RuntimeError("card declined")`` to show retries is
    reported by the SDK with its traceback; that one is expected.
    """
    raised = {f"{kind}: {text}" for kind, text in re.findall(r'raise (\w+)\("([^"]*)"\)', block)}
    unexpected = []
    for chunk in err.split("Traceback (most recent call last):")[1:]:
        lines = chunk.splitlines()[1:]
        last = next((line for line in lines if line and not line.startswith(" ")), "")
        if last not in raised:
            unexpected.append(last or chunk[:200])
    return unexpected


def test_readme_has_config_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_config_parses(block: str) -> None:
    config = parse_config(block, source="README.md", environ={})
    assert config.state is not None


def serves(block: str) -> bool:
    return ".run()" in block or ".serve_forever()" in block


def section_of(block: str) -> tuple[str, str]:
    """(heading, text) of the README section (``## ...``) that holds ``block``."""
    at = TEXT.index(block)
    start = TEXT.rindex("\n## ", 0, at) + 1 if "\n## " in TEXT[:at] else 0
    end = TEXT.find("\n## ", start + 1)
    text = TEXT[start : end if end != -1 else len(TEXT)]
    return text.splitlines()[0][3:], text


def served_ids(block: str) -> list[str]:
    """Function ids a snippet serves: ``@iii.function("id")`` and ``@iii.http("GET", "/p")``."""
    ids = re.findall(r"\.function\(\"([^\"]+)\"", block)
    ids += [f"http::{m} {p}" for m, p in re.findall(r"\.http\(\"([A-Z]+)\", \"([^\"]+)\"", block)]
    return sorted(ids)


HTTP_SECTION = "Functions over HTTP"
README_HTTP_PORT = "3111"


def curl_lines(section: str) -> list[tuple[str, str]]:
    """The section's ``curl`` lines, each with the output its ``# `` line under it shows."""
    shell = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    lines = [ln for block in shell for ln in block.splitlines() if ln.strip()]
    pairs = []
    for command, shown in itertools.pairwise(lines):
        if command.startswith("curl ") and shown.startswith("# "):
            pairs.append((command, shown[2:]))
    return pairs


def http_routes_bound(url: str, count: int) -> bool:
    listed = trigger(url, "engine::registered-triggers::list", {"trigger_type": "http"})
    return sum(1 for t in listed["registered_triggers"] if t["active"]) >= count


def run_curls(section: str, http_port: int) -> None:
    """Every curl line as written (but for the port), its output as the README shows it."""
    pairs = curl_lines(section)
    assert len(pairs) >= 4, "the section shows curl lines, each followed by its output"
    for command, shown in pairs:
        assert f"localhost:{README_HTTP_PORT}/" in command, command
        done = subprocess.run(
            ["bash", "-c", command.replace(f"localhost:{README_HTTP_PORT}/", f"localhost:{http_port}/")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        assert done.stdout.strip() == shown, f"{command}\nprinted {done.stdout!r}, README shows {shown!r}"


def expected_prints(block: str) -> list[Any]:
    """``print(...)  # <literal>`` lines whose comment is a plain Python literal."""
    out = []
    for comment in re.findall(r"^\s*print\(.*\)\s*#\s*(.+)$", block, flags=re.M):
        try:
            out.append(ast.literal_eval(comment))
        except (ValueError, SyntaxError):  # "{'id': ..., ...}": a shape, not a value
            continue
    return out


def trigger(url: str, function_id: str, payload: Any) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "pyiii", "trigger", function_id, json.dumps(payload), "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_readme_has_python_examples() -> None:
    assert len(PY_BLOCKS) >= 4
    assert serves(PY_BLOCKS[0]), "the first snippet must keep its worker serving"


@pytest.mark.parametrize("block", PY_BLOCKS, ids=[f"python{i}" for i in range(len(PY_BLOCKS))])
def test_readme_python_runs_as_written(block: str, make_engine_proc: Any, tmp_path: Path) -> None:
    heading, section = section_of(block)
    http_port = 0
    if heading == HTTP_SECTION:
        # The section's own engine config, on a free HTTP port (the README's says ${III_HTTP_PORT:3111}).
        config = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0]
        assert "${III_HTTP_PORT:3111}" in config
        http_port = free_port()
        engine_proc = make_engine_proc(config, env={"III_HTTP_PORT": str(http_port)}).start()
    elif heading in SECTION_CONFIGS:
        engine_proc = make_engine_proc(SECTION_CONFIGS[heading].read_text()).start()
    else:
        engine_proc = make_engine_proc().start()
    script = tmp_path / "snippet.py"
    script.write_text(block)
    env = {**os.environ, "III_URL": engine_proc.url, "PYTHONUNBUFFERED": "1"}
    env.pop("III_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        if serves(block):
            ids = served_ids(block)
            assert ids, "a serving snippet registers functions"
            deadline = time.monotonic() + SNIPPET_TIMEOUT_S
            while True:
                listed = trigger(engine_proc.url, "engine::functions::list", {})
                if {f["function_id"] for f in listed["functions"]} >= set(ids):
                    break
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"{ids} never served"
                time.sleep(0.1)
            if "math::add" in ids:
                assert trigger(engine_proc.url, "math::add", {"a": 1, "b": 2}) == {"c": 3}
            if http_port:
                routes = [i for i in ids if i.startswith("http::")]
                while not http_routes_bound(engine_proc.url, len(routes)):
                    assert time.monotonic() < deadline, f"{routes} never bound"
                    time.sleep(0.1)
                run_curls(section, http_port)
            time.sleep(0.3)
            assert proc.poll() is None, "a serving snippet keeps serving"
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=SNIPPET_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert not unexpected_tracebacks(err, block) and "never awaited" not in err, err
    printed = [ast.literal_eval(line) for line in out.splitlines() if line.strip()[:1] in "{["]
    for value in expected_prints(block):
        assert value in printed, f"expected {value!r} among the printed lines:\n{out}"


def test_not_built_yet_lists_the_modules_that_provide_missing_trigger_types() -> None:
    from pyiii.modules import CATALOG, PLANNED
    from pyiii.trigger_providers import TRIGGER_TYPE_MODULES

    section = TEXT.split("\n## Not built yet\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(iii-[a-z-]+)` \| ([^|]*) \|", section, flags=re.M))
    built = {spec.name for spec in CATALOG}
    # a module is listed until it is built; the engine's and the SDK's hints name the same modules
    assert set(rows) == set(TRIGGER_TYPE_MODULES.values()) - built
    assert set(rows) <= set(PLANNED)
    for module, cell in rows.items():
        types = {t for t, m in TRIGGER_TYPE_MODULES.items() if m == module}
        assert set(re.findall(r"`([^`]+)`", cell)) == types, module


PORTING = README.parent / "docs" / "from-official-python-sdk.md"
PORT_BLOCKS = re.findall(r"```python\n(.*?)```", PORTING.read_text(), flags=re.S)
COMPAT = Path(os.environ.get("III_COMPAT_DIR") or README.parent / ".compat")
PORT_CASES = [
    (block, sdk)
    for block in PORT_BLOCKS
    for sdk in (["py-0.11.6", "py-0.25.0"] if "from iii import" in block else ["pyiii"])
]


@pytest.mark.parametrize(
    ("block", "sdk"), PORT_CASES, ids=[f"{sdk}-{i}" for i, (_, sdk) in enumerate(PORT_CASES)]
)
def test_porting_page_programs_do_the_same_with_either_sdk(
    block: str, sdk: str, engine_proc: Any, tmp_path: Path
) -> None:
    python = Path(sys.executable) if sdk == "pyiii" else COMPAT / sdk / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run `make test` (scripts/install-compat.sh) first")
    script = tmp_path / "ported.py"
    script.write_text(block.replace("ws://127.0.0.1:49134", engine_proc.url))
    env = {**os.environ, "III_URL": engine_proc.url, "OTEL_ENABLED": "false"}
    done = subprocess.run([str(python), str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "{'c': 3}", done.stdout
    assert "never awaited" not in done.stderr
