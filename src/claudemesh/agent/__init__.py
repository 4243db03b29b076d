"""Connecting coding agents (Claude Code, other MCP clients) to the local daemon.

``framing`` and ``naming`` are pure and stdlib-only, so the hook commands can use them
on their hot path; ``mcp_server`` is the stdio MCP server behind ``claudemesh mcp`` and
is the only module here that imports the ``mcp`` SDK. ``claude_settings``,
``claude_setup`` and ``jsondoc`` write Claude Code's configuration (``claudemesh setup``).
"""
