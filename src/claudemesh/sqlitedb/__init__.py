"""SQLite plumbing shared by the daemon's stores and the broker's SQLite store."""
