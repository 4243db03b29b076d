"""Agent-facing surfaces: what a coding agent (Claude Code, another MCP client) sees.

``framing`` and ``naming`` are pure and stdlib-only, so the hook commands can use them
on their hot path; ``mcp_server`` is the stdio MCP server behind ``claudemesh mcp`` and
is the only module here that imports the ``mcp`` SDK.
"""
