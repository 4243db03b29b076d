"""SQLite stores of the daemon: outbox.db (and inbox.db later)."""
