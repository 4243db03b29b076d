"""The broker: a WebSocket server that accepts, stores and delivers mesh messages."""
