"""pyiii: an iii engine in Python, and a Python SDK for its workers."""

__version__ = "0.1.0"
