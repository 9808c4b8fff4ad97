"""The pyiii Python SDK: connect a worker, serve functions, trigger others."""

from pyiii.errors import IIIError
from pyiii.sdk.logger import Logger
from pyiii.sdk.worker import FunctionRef, Trigger, Worker, connect, register_worker

__all__ = ["FunctionRef", "IIIError", "Logger", "Trigger", "Worker", "connect", "register_worker"]
