"""The kinds of change a store reports to its listeners.

A write that an adapter commits is reported as ``(kind, scope, key, old JSON
text, new JSON text)`` (see ``base.ChangeListener``). The kinds are bytes so
an adapter can put them on the wire (Redis pub/sub) as they are.
"""

from __future__ import annotations

CREATED = b"state:created"
UPDATED = b"state:updated"
DELETED = b"state:deleted"
# An entry removed because its TTL passed. The State module delivers it as
# ``state:deleted`` with ``"expired": true``.
EXPIRED = b"state:expired"
