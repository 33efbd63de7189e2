"""The credential-proxy's metrics (listed in the top README's "Metrics" table): sandbox egress, MCP
tool calls, web fetches and OpenBao. Its bus operations are counted by ``corral_rpc_*`` (``corral.bus``)."""

from __future__ import annotations

from corral.telemetry.metrics import counter

EGRESS_CONNECTIONS = counter(
    "corral_credential_proxy_egress_connections_total",
    "Connections sandboxes opened through their egress proxies, by outcome: connected, refused (the "
    "session's policy or the address rules), unreachable, malformed (not an HTTP request head), "
    "too_many (the session's connection cap), git (a session repository's request, carried by the git proxy).",
    ("outcome",),
)
MCP_CALLS = counter(
    "corral_credential_proxy_mcp_calls_total",
    "MCP tool calls, by outcome: ok, error (the server answered with an error result), failed (the server "
    "could not be reached, refused or timed out).",
    ("outcome",),
)
WEB_FETCHES = counter(
    "corral_credential_proxy_web_fetches_total",
    "web_fetch requests, by outcome: ok, or the web tool error code answered (url_not_allowed, url_not_accessible...).",
    ("outcome",),
)
OPENBAO_CALLS = counter(
    "corral_credential_proxy_openbao_calls_total",
    "Credential secret reads, writes, lists and deletes in OpenBao, by outcome: ok, not_found, refused "
    "(the token lacks the right), unavailable (unreachable, sealed, timed out).",
    ("outcome",),
)
