"""The span of one tool call, after the OpenTelemetry GenAI conventions (``execute_tool <name>``).

Its attributes say which tool ran and how it ended, never what it was given or answered (a tool's
input and output may hold anything the model or a web page put there).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace

from corral import telemetry
from corral.contracts.api.events import HarnessEvent
from corral.harness.decide import ToolCall

_tracer = telemetry.tracer(__name__)


@contextmanager
def tool_span(session_id: str, call: ToolCall) -> Iterator[trace.Span]:
    """The current span while ``call`` runs (the sandbox, MCP and web requests it makes are its children)."""
    attributes: dict[str, str] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.id,
        "gen_ai.tool.type": "extension" if call.mcp_server is not None else "function",
        "corral.session_id": session_id,
    }
    if call.mcp_server is not None:
        attributes["corral.mcp_server_name"] = call.mcp_server
    with _tracer.start_as_current_span(f"execute_tool {call.name}", attributes=attributes) as span:
        yield span


def describe_tool_span(span: trace.Span, kind: str, batch: Sequence[HarnessEvent]) -> None:
    """Where the call ran (``builtin``: the sandbox, ``mcp``, ``web``) and whether it failed."""
    span.set_attribute("corral.tool.kind", kind)
    if not batch or getattr(batch[-1], "is_error", False):
        span.set_attribute("error.type", "tool_error")
        span.set_status(trace.Status(trace.StatusCode.ERROR, "the tool answered with an error"))
