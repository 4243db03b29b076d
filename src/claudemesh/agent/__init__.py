"""Connecting coding agents (Claude Code, other MCP clients) to the local daemon."""
