"""The daemon's local HTTP API over a Unix socket and loopback TCP."""
