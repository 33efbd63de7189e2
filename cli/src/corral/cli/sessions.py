"""``corral sessions``: run a turn and watch it, follow a session, list, show, export its log."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from corral.cli.context import client_of
from corral.cli.failure import Failure
from corral.cli.lookup import agent_named, environment_named
from corral.cli.output import as_dict, as_yaml, err, out, when
from corral.cli.turn import Answer, TurnView, follow, one_line

app = typer.Typer(help="Sessions: run a turn, follow, list, show, export the log.", no_args_is_help=True)

#: Events per page when reading a log (the API's largest page).
PAGE = 100

#: Only the agent's text is streamed as it is written (thinking is shown as one line).
DELTAS: list[Any] = ["agent.message"]


def _answer(yes: bool, deny: bool) -> Answer:
    if yes and deny:
        raise Failure("--yes and --deny contradict each other: pass one (or neither, to be asked)")
    return Answer.ALLOW if yes else Answer.DENY if deny else Answer.ASK


@app.command()
def run(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to ask the agent.")],
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent's name or id.")],
    environment: Annotated[
        str, typer.Option("--environment", "-e", help="The environment's name or id (for a new session).")
    ] = "default",
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Continue this session instead of starting one.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="The new session's title (default: the prompt).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Allow every tool call that asks for confirmation.")] = False,
    deny: Annotated[bool, typer.Option("--deny", help="Deny every tool call that asks for confirmation.")] = False,
) -> None:
    """Send PROMPT to an agent and show the turn as it happens, until the session is idle.

    Tool calls that need a confirmation are put to you (allow/deny) unless --yes or --deny says."""
    answer = _answer(yes, deny)
    client = client_of(ctx)
    if session is None:
        chosen = agent_named(client, agent)
        env = environment_named(client, environment)
        created = client.beta.sessions.create(
            agent=chosen.id, environment_id=env.id, title=title or one_line(prompt, 80)
        )
        session_id = created.id
        err.print(f"session {session_id} (agent {chosen.name} version {chosen.version}, environment {env.name})")
    else:
        session_id = session
    with client.beta.sessions.events.stream(session_id, event_deltas=DELTAS) as stream:
        client.beta.sessions.events.send(
            session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": prompt}]}]
        )
        try:
            outcome = follow(client, session_id, stream, TurnView(), answer=answer, seen=set())
        except KeyboardInterrupt:
            client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
            raise Failure(f"interrupted session {session_id}", exit_code=130) from None
    if outcome.exit_code:
        raise Failure(f"session {session_id}: {outcome.reason}", exit_code=outcome.exit_code)


@app.command()
def tail(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    follow_on: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep following after the session goes idle (Ctrl-C stops).")
    ] = False,
) -> None:
    """Show a session's log, then follow it live until it is idle (or, with --follow, until Ctrl-C)."""
    client = client_of(ctx)
    view, seen = TurnView(show_user=True), set[str]()
    with client.beta.sessions.events.stream(session_id, event_deltas=DELTAS) as stream:
        # the stream is open first, so nothing appended while the history is read is missed
        for event in client.beta.sessions.events.list(session_id, limit=PAGE):
            seen.add(event.id)
            view.show(event)
        if not follow_on and client.beta.sessions.retrieve(session_id).status in ("idle", "terminated"):
            return
        try:
            if follow_on:
                follow(client, session_id, stream, view, answer=None, seen=seen, until=lambda _: False)
            else:
                follow(client, session_id, stream, view, answer=None, seen=seen)
        except KeyboardInterrupt:
            return


@app.command("list")
def list_sessions(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's (name or id).")] = None,
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only sessions in this status (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the ids, one a line.")] = False,
) -> None:
    """The workspace's sessions, newest first."""
    client = client_of(ctx)
    filters: dict[str, Any] = {}
    if agent is not None:
        filters["agent_id"] = agent_named(client, agent).id
    if status:
        filters["statuses"] = status
    table = Table("id", "status", "agent", "title", "created", box=None, pad_edge=False)
    listed = client.beta.sessions.list(limit=min(limit, PAGE), **filters)
    for session in itertools.islice(listed, limit):
        if quiet:
            out.print(session.id)
            continue
        agent_name = getattr(session.agent, "name", "") or ""
        table.add_row(session.id, session.status, Text(agent_name), Text(session.title or ""), when(session.created_at))
    if not quiet:
        out.print(table)


@app.command()
def get(ctx: typer.Context, session_id: Annotated[str, typer.Argument(help="The session's id.")]) -> None:
    """One session (status, agent, usage) as YAML."""
    out.print(as_yaml(as_dict(client_of(ctx).beta.sessions.retrieve(session_id))), end="", markup=False)


@app.command()
def export(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The JSONL file to write (`-`: standard output).")
    ] = Path("-"),
) -> None:
    """Write a session's whole log, one event per line (JSON as the API returns it), oldest first."""
    client = client_of(ctx)
    client.beta.sessions.retrieve(session_id)  # a clear "not found" before any file is created
    written = 0
    to_stdout = str(output) == "-"
    try:
        handle = contextlib.nullcontext(sys.stdout) if to_stdout else output.open("w")
    except OSError as error:
        raise Failure(f"cannot write {output}: {error.strerror or error}") from None
    columns = (SpinnerColumn(), TextColumn("exporting {task.fields[session]}: {task.completed:.0f} events"))
    with handle as sink, Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("export", total=None, session=session_id)
        for event in client.beta.sessions.events.list(session_id, limit=PAGE, order="asc"):
            sink.write(json.dumps(as_dict(event), ensure_ascii=False, separators=(",", ":")) + "\n")
            written += 1
            progress.advance(task)
    if not to_stdout:
        err.print(f"wrote {written} events of {session_id} to {output}")
