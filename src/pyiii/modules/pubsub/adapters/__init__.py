"""Message carriers of the PubSub module: ``local`` (one engine) and ``redis`` (many)."""
