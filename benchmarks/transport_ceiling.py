"""The ceiling: the pyiii SDK client against a bare echo server on our transport.

The echo server speaks just enough protocol to answer ``invokefunction``
with its own data: one decode and one encode per request, the least any
engine can do. The state, cross-worker and redis rows compare against this.

    python benchmarks/transport_ceiling.py            # = run.py --only ceiling
    python benchmarks/transport_ceiling.py --serve N  # run the echo server alone
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import process, section_main
from pyiii import protocol

# What the ceiling and cross-worker rows send (and get back).
PAYLOAD = {"scope": "bench", "key": "k", "n": 1}


async def serve_echo(port: int) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            self.t = transport
            hello = protocol.WorkerRegistered(worker_id=str(uuid.uuid4()))
            transport.send(WSMsgType.TEXT, protocol.encode(hello))

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is not WSMsgType.TEXT:
                if frame.msg_type is WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()
                return
            msg = protocol.decode(frame.get_payload_as_bytes())
            if isinstance(msg, protocol.InvokeFunction) and isinstance(msg.invocation_id, str):
                reply = protocol.InvocationResult(
                    invocation_id=msg.invocation_id, function_id=msg.function_id, result=msg.data
                )
                transport.send(WSMsgType.TEXT, protocol.encode(reply))

    server = await ws_create_server(lambda _req: Echo(), "127.0.0.1", port)
    print("echo ready", flush=True)
    await server.serve_forever()


def echo_server(port: int):  # type: ignore[no-untyped-def]
    return process([sys.executable, __file__, "--serve", str(port)], "echo ready")


def main() -> None:
    section_main(
        "ceiling", __doc__, serve=serve_echo, serve_help="run only the echo server on this port"
    )


if __name__ == "__main__":
    main()
