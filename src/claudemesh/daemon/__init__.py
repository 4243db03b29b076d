"""The local daemon: durable outbox, local HTTP API, and (later) the broker link."""
