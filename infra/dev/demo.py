"""`make demo`: one real agent session through the official anthropic SDK, unchanged.

The SDK finds Corral through ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY (written to .corral/env by
`make up`). The agent has the built-in toolset, so it writes and runs code in its sandbox. With no
real model key configured, the turns come from Corral's embedded model, which `make up` loads with
infra/dev/demo-script.json (a script of tool calls; the tools really run in the sandbox).
"""

from __future__ import annotations

import json
import sys
import time

import anthropic

PROMPT = "Write a Python script that prints the first ten primes, run it in your sandbox, and tell me the output."


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    client = anthropic.Anthropic()  # base_url and api_key from the environment
    say(f"Corral at {client.base_url}")

    agent = client.beta.agents.create(
        name="demo-agent",
        model="claude-sonnet-4-6",
        system="You are a concise assistant running on Corral.",
        tools=[{"type": "agent_toolset_20260401"}],
    )
    say(f"agent        {agent.id} (version {agent.version}, model {agent.model.id})")
    environment = client.beta.environments.create(
        name=f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{agent.id[-6:].lower()}",
        config={"type": "cloud", "networking": {"type": "unrestricted"}},
    )
    say(f"environment  {environment.id} ({environment.name})")
    session = client.beta.sessions.create(agent=agent.id, environment_id=environment.id, title="Corral demo")
    say(f"session      {session.id} (status {session.status})")
    say()

    with client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"]) as stream:
        sent = client.beta.sessions.events.send(
            session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": PROMPT}]}]
        )
        echoed = (sent.data or [])[0]
        say(f"> user.message {echoed.id}: {PROMPT}")
        streaming = False
        for event in stream:
            if event.type == "event_delta":
                sys.stdout.write(event.delta.content.text)
                sys.stdout.flush()
                streaming = True
                continue
            if streaming:
                say()
                streaming = False
            if event.type == "event_start":
                sys.stdout.write("  ... ")
                continue
            detail = ""
            if event.type == "agent.message":
                detail = ": " + "".join(block.text for block in event.content if block.type == "text")
            elif event.type == "agent.tool_use":
                detail = f": {event.name} {json.dumps(event.input)[:120]}"
            elif event.type == "agent.tool_result":
                text = "".join(block.text for block in event.content or [] if block.type == "text")
                detail = f" ({'error' if event.is_error else 'ok'}): {text.strip()[:200]}"
            elif event.type == "span.model_request_end":
                usage = event.model_usage
                detail = f": {usage.input_tokens} in / {usage.output_tokens} out tokens"
            elif event.type == "session.error":
                detail = f": {event.error.type}: {event.error.message} ({event.error.retry_status.type})"
            elif event.type == "session.status_idle":
                detail = f": stop_reason={event.stop_reason.type}"
            say(f"< {event.type} {event.id}{detail}")
            if event.type == "session.status_idle" and event.stop_reason.type != "requires_action":
                break

    done = client.beta.sessions.retrieve(session.id)
    totals = done.usage
    say()
    say(f"session {done.id} is {done.status}")
    say(
        f"usage: {totals.input_tokens} input tokens, {totals.output_tokens} output tokens, "
        f"{totals.active_seconds or 0:.3f} s active"
    )
    listed = list(client.beta.sessions.events.list(done.id))
    say(f"the log holds {len(listed)} events: " + ", ".join(e.type for e in listed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
