"""``corral environments``: apply from a file (updated only when something changed), list, get."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from corral.cli.context import client_of
from corral.cli.lookup import environment_named, find_environment
from corral.cli.output import as_dict, as_yaml, out, when
from corral.cli.specs import create_body, load_spec, plan_update

app = typer.Typer(help="Environments: apply from YAML, list, show.", no_args_is_help=True)

FileOption = Annotated[
    Path, typer.Option("--file", "-f", help="The environment's YAML file (fields as in environments.create).")
]


@app.command()
def apply(ctx: typer.Context, file: FileOption) -> None:
    """Create the environment the file describes, or update it if it differs; unchanged: nothing."""
    spec = load_spec(file, "environment")
    client = client_of(ctx)
    current = find_environment(client, spec.name)
    if current is None:
        environment = client.beta.environments.create(**create_body(spec))
        out.print(f"environment {environment.name} created: {environment.id}")
        return
    plan = plan_update(spec, as_dict(current))
    if plan.unchanged:
        out.print(f"environment {current.name} unchanged: {current.id}")
        return
    environment = client.beta.environments.update(current.id, **plan.body)
    out.print(f"environment {environment.name} updated: {environment.id} ({', '.join(plan.changed)} changed)")


@app.command("list")
def list_environments(
    ctx: typer.Context,
    include_archived: Annotated[bool, typer.Option(help="Also archived environments.")] = False,
) -> None:
    """The workspace's environments."""
    table = Table("name", "id", "networking", "updated", box=None, pad_edge=False)
    for env in client_of(ctx).beta.environments.list(limit=100, include_archived=include_archived):
        networking = getattr(getattr(env.config, "networking", None), "type", "-")
        table.add_row(Text(env.name), env.id, str(networking), when(env.updated_at))
    out.print(table)


@app.command()
def get(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The environment's name or id.")]) -> None:
    """One environment as YAML."""
    client = client_of(ctx)
    out.print(as_yaml(as_dict(environment_named(client, name))), end="", markup=False)
