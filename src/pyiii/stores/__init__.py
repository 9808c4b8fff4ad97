"""Stored data shared by the modules that keep it (State, Stream).

A store maps scope -> key -> entry (JSON text plus a version). ``base``
defines the adapter interface and ``memory``, ``sqlite`` and ``redis``
implement it; ``ops`` is the update-op engine, ``mutations`` the writes built
on it, ``events`` the change kinds adapters report, ``wire`` the input
decoding shared by the functions over a store, ``change_triggers`` the
ordered delivery of change events to trigger bindings, and ``remote`` the connection
to another engine that bridge adapters forward calls through. A module maps
its own addresses onto scopes and keys and decides who hears of a change.
"""
