"""Lock backends of the Cron module: ``kv`` (one engine) and ``redis`` (many)."""
