"""The ``stream_engine`` fixture: an in-process engine (real sockets, port 0 for the
worker and the stream port) once per adapter in ``support.stream_engines.ADAPTERS``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.engines import running_server, sdk_worker, url_of
from support.stream_engines import ADAPTERS, StreamEngine, stream_config


@pytest.fixture(params=list(ADAPTERS))
async def stream_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StreamEngine]:
    adapter = ADAPTERS[request.param](tmp_path, request)
    async with running_server(stream_config(adapter)) as server, sdk_worker(url_of(server), "t") as w:
        yield StreamEngine(server, w, request.param)
