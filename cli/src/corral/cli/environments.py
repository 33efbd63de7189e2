"""``corral environments``: apply from a file (updated only when something changed), list, get."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from corral.cli.context import client_of
from corral.cli.lookup import environment_named, find_environment
from corral.cli.output import as_dict, as_yaml, err, out, when
from corral.cli.progress import Progress
from corral.cli.specs import create_body, load_spec, plan_update

app = typer.Typer(help="Environments: apply from YAML, list, show.", no_args_is_help=True)

FileOption = Annotated[
    Path, typer.Option("--file", "-f", help="The environment's YAML file (fields as in environments.create).")
]

NoProgressOption = Annotated[
    bool, typer.Option("--no-progress", help="Plain lines on stderr instead of a spinner (the default when piped).")
]

#: The package managers of ``config.packages``, in the order an environment image installs them.
MANAGERS = ("apt", "pip", "npm", "cargo", "gem", "go")


def packages_of(environment: dict[str, Any]) -> str:
    """``apt: jq, curl; pip: requests``: the packages the environment's image is built with ('' for none)."""
    packages = (environment.get("config") or {}).get("packages") or {}
    return "; ".join(f"{m}: {', '.join(packages[m])}" for m in MANAGERS if packages.get(m))


def image_note(environment: dict[str, Any]) -> str | None:
    """What happens to the packages, said once they are new or changed: the API reports no build state."""
    packages = packages_of(environment)
    if not packages:
        return None
    return (
        f"note: environment {environment['name']} lists packages ({packages}): its image is built when a "
        "session in it first needs a sandbox (a minute or more, once per package list), and that session's "
        "first tool call waits for it; the API reports no build progress to show here"
    )


@app.command()
def apply(ctx: typer.Context, file: FileOption, no_progress: NoProgressOption = False) -> None:
    """Create the environment the file describes, or update it if it differs; unchanged: nothing."""
    spec = load_spec(file, "environment")
    client = client_of(ctx)
    progress = Progress(live=False if no_progress else None)
    with progress.step(f"looking up environment {spec.name}"):
        current = find_environment(client, spec.name)
    if current is None:
        with progress.step(f"creating environment {spec.name}"):
            environment = client.beta.environments.create(**create_body(spec))
        out.print(f"environment {environment.name} created: {environment.id}")
    else:
        plan = plan_update(spec, as_dict(current))
        if plan.unchanged:
            out.print(f"environment {current.name} unchanged: {current.id}")
            return
        with progress.step(f"updating environment {spec.name}"):
            environment = client.beta.environments.update(current.id, **plan.body)
        out.print(f"environment {environment.name} updated: {environment.id} ({', '.join(plan.changed)} changed)")
        if "config" not in plan.changed:
            return
    note = image_note(as_dict(environment))
    if note is not None:
        err.print(note, markup=False, highlight=False)


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
