"""A worker's ``Logger`` output shows up on the engine console (docs/protocol.md §7)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets


def _str_attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


async def test_otel_logs_frame_printed_with_message_data_and_service(engine_proc: Any) -> None:
    export = {
        "resourceLogs": [
            {
                "resource": {"attributes": [_str_attr("service.name", "users-svc")]},
                "scopeLogs": [
                    {
                        "scope": {"name": "iii"},
                        "logRecords": [
                            {
                                "timeUnixNano": "1767225600000000000",
                                "severityNumber": 9,
                                "severityText": "INFO",
                                "body": {"stringValue": "User saved to state"},
                                "attributes": [_str_attr("log.data", json.dumps({"userId": "u1"}))],
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                            }
                        ],
                    }
                ],
            }
        ]
    }
    async with websockets.connect(engine_proc.url + "/otel", compression=None) as otel:
        await otel.send(b"LOGS" + json.dumps(export).encode())
        found = await asyncio.to_thread(engine_proc.wait_for_output, "User saved to state")
    assert found, engine_proc.output
    (line,) = [ln for ln in engine_proc.output.splitlines() if "User saved to state" in ln]
    assert "u1" in line
    assert "userId" in line
    assert "users-svc" in line
    assert "INFO" in line
