"""The pyiii Python SDK: connect a worker, serve functions, trigger others."""

from pyiii.errors import IIIError
from pyiii.sdk.channels import Channel, ChannelClosed, ChannelReader, ChannelWriter
from pyiii.sdk.http import HttpRequest, HttpResponse
from pyiii.sdk.logger import Logger
from pyiii.sdk.state import Item, Page, State, StateEntry, TxOp, VersionMismatch, WriteResult
from pyiii.sdk.worker import FunctionRef, Trigger, Worker, connect, register_worker

__all__ = [
    "Channel",
    "ChannelClosed",
    "ChannelReader",
    "ChannelWriter",
    "FunctionRef",
    "HttpRequest",
    "HttpResponse",
    "IIIError",
    "Item",
    "Logger",
    "Page",
    "State",
    "StateEntry",
    "Trigger",
    "TxOp",
    "VersionMismatch",
    "Worker",
    "WriteResult",
    "connect",
    "register_worker",
]
