"""``corral workspaces``: create and list workspaces (the admin API)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from corral.cli.context import admin_of
from corral.cli.output import out, when

app = typer.Typer(help="Workspaces (needs an admin key): create, list.", no_args_is_help=True)


@app.command()
def create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The workspace's name (1-40).")]) -> None:
    """Create a workspace."""
    workspace = admin_of(ctx).call("POST", "/workspaces", json={"name": name})
    out.print(f"workspace {workspace['name']} created: {workspace['id']}")


@app.command("list")
def list_workspaces(
    ctx: typer.Context,
    include_archived: Annotated[bool, typer.Option(help="Also archived workspaces.")] = False,
) -> None:
    """The organisation's workspaces."""
    table = Table("name", "id", "created", "archived", box=None, pad_edge=False)
    params = {"include_archived": "true"} if include_archived else {}
    for workspace in admin_of(ctx).pages("/workspaces", **params):
        archived = when(workspace.get("archived_at")) if workspace.get("archived_at") else ""
        table.add_row(Text(workspace["name"]), workspace["id"], when(workspace.get("created_at")), archived)
    out.print(table)
