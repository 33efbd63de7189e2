"""``corral agents``: apply from a file (a new version only when something changed), list, get, diff."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from corral.cli.context import client_of
from corral.cli.failure import Failure
from corral.cli.lookup import agent_named, find_agent
from corral.cli.output import as_dict, as_yaml, out, when
from corral.cli.specs import DIGEST_KEY, create_body, load_spec, plan_update

app = typer.Typer(help="Agents: apply from YAML, list, show, compare versions.", no_args_is_help=True)

#: Fields that differ between any two versions without saying anything about the agent.
_BOOKKEEPING = ("created_at", "updated_at", "version")

FileOption = Annotated[
    Path, typer.Option("--file", "-f", help="The agent's YAML file (fields as in the API's agents.create).")
]


@app.command()
def apply(ctx: typer.Context, file: FileOption) -> None:
    """Create the agent the file describes, or update it (a new version) if it differs; unchanged: nothing."""
    spec = load_spec(file, "agent")
    client = client_of(ctx)
    current = find_agent(client, spec.name)
    if current is None:
        agent = client.beta.agents.create(**create_body(spec))
        out.print(f"agent {agent.name} created: {agent.id} version {agent.version}")
        return
    plan = plan_update(spec, as_dict(current))
    if plan.unchanged:
        out.print(f"agent {current.name} unchanged: {current.id} version {current.version}")
        return
    # ``version``: the update applies only to the version compared with (409 if someone got there first)
    agent = client.beta.agents.update(current.id, version=current.version, **plan.body)
    out.print(
        f"agent {agent.name} updated: {agent.id} version {current.version} → {agent.version} "
        f"({', '.join(plan.changed)} changed)"
    )


@app.command("list")
def list_agents(
    ctx: typer.Context,
    include_archived: Annotated[bool, typer.Option(help="Also archived agents.")] = False,
) -> None:
    """The workspace's agents."""
    table = Table("name", "id", "version", "model", "updated", box=None, pad_edge=False)
    for agent in client_of(ctx).beta.agents.list(limit=100, include_archived=include_archived):
        table.add_row(Text(agent.name), agent.id, str(agent.version), agent.model.id, when(agent.updated_at))
    out.print(table)


def _version(client: Any, agent_id: str, version: int | None) -> dict[str, Any]:
    if version is None:
        return as_dict(client.beta.agents.retrieve(agent_id))
    if version < 1:
        raise Failure("versions start at 1")
    return as_dict(client.beta.agents.retrieve(agent_id, version=version))


@app.command()
def get(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The agent's name or id.")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="This version (default: the latest).")] = None,
) -> None:
    """One agent (a version of it) as YAML."""
    client = client_of(ctx)
    out.print(as_yaml(_version(client, agent_named(client, name).id, version)), end="", markup=False)


def _shown(version: dict[str, Any]) -> dict[str, Any]:
    """A version as compared: without its bookkeeping, nor the digest ``apply`` keeps in metadata."""
    shown = {k: v for k, v in version.items() if k not in _BOOKKEEPING}
    shown["metadata"] = {k: v for k, v in (version.get("metadata") or {}).items() if k != DIGEST_KEY}
    return shown


@app.command()
def diff(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The agent's name or id.")],
    from_version: Annotated[
        int | None, typer.Option("--from", help="The older version (default: --to minus 1).")
    ] = None,
    to_version: Annotated[int | None, typer.Option("--to", help="The newer version (default: the latest).")] = None,
) -> None:
    """A unified diff between two versions of an agent."""
    client = client_of(ctx)
    agent = agent_named(client, name)
    newer = _version(client, agent.id, to_version)
    old_number = from_version if from_version is not None else int(newer["version"]) - 1
    if old_number < 1:
        raise Failure(f"agent {agent.name} has only version {newer['version']}: nothing to compare it with")
    older = _version(client, agent.id, old_number)
    lines = difflib.unified_diff(
        as_yaml(_shown(older)).splitlines(keepends=True),
        as_yaml(_shown(newer)).splitlines(keepends=True),
        fromfile=f"{agent.name} version {older['version']}",
        tofile=f"{agent.name} version {newer['version']}",
    )
    for line in lines:
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else None
        out.print(Text(line.rstrip("\n"), style=style or ""))
