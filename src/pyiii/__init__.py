"""pyiii: an iii engine in Python, and a Python SDK for its workers.

``from pyiii import register_worker, connect, Logger`` is the SDK; the engine
is the ``pyiii`` command (``pyiii.cli``).
"""

__version__ = "0.1.0"

from pyiii.errors import IIIError
from pyiii.sdk import (
    FunctionRef,
    HttpRequest,
    HttpResponse,
    Logger,
    Trigger,
    Worker,
    connect,
    register_worker,
)

__all__ = [
    "FunctionRef",
    "HttpRequest",
    "HttpResponse",
    "IIIError",
    "Logger",
    "Trigger",
    "Worker",
    "__version__",
    "connect",
    "register_worker",
]
