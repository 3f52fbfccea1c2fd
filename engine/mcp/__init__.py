"""MCP servers' tools for agents: configuration (org.json `mcp_servers`), grants
(`permissions.tools`: `"<server>/<tool>"`, `"<server>/*"`) and the per-run hub that
starts servers when first needed, checks arguments against each tool's schema, calls
with a timeout, caps results and restarts a crashed server with backoff.

Uses the official Python SDK (`mcp`, 2.x); the SDK is imported only when a run first
needs a server, so organisations without MCP pay nothing for it.
"""

from lemming.engine.mcp.config import (
    McpServerSpec,
    expand_env_refs,
    is_mcp_tool,
    mcp_grants,
    split_tool_name,
    tool_granted,
)
from lemming.engine.mcp.hub import McpCallResult, McpHub, McpTool, ServerState

__all__ = [
    "McpCallResult",
    "McpHub",
    "McpServerSpec",
    "McpTool",
    "ServerState",
    "expand_env_refs",
    "is_mcp_tool",
    "mcp_grants",
    "split_tool_name",
    "tool_granted",
]
