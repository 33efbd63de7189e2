"""``corral keys``: create, list and revoke API keys (the admin API). A new key is shown once."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from corral.cli.admin import workspace_id
from corral.cli.context import admin_of
from corral.cli.failure import Failure
from corral.cli.output import err, out, when

app = typer.Typer(help="API keys (needs an admin key): create, list, revoke.", no_args_is_help=True)


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the key is for.")],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="The workspace's name or id.")],
    role: Annotated[str, typer.Option(help="`user`, or `admin` (may also call the admin API).")] = "user",
    rps: Annotated[float | None, typer.Option(help="Its own rate limit: requests per second.")] = None,
    burst: Annotated[int | None, typer.Option(help="Its own rate limit: burst (with --rps).")] = None,
) -> None:
    """Create a key; the key itself is printed on stdout, this once (Corral keeps only its hash)."""
    if (rps is None) != (burst is None):
        raise Failure("--rps and --burst go together: pass both, or neither for the gateway's defaults")
    admin = admin_of(ctx)
    body: dict[str, Any] = {"name": name, "workspace_id": workspace_id(admin, workspace), "role": role}
    if rps is not None:
        body["rate_limit"] = {"requests_per_second": rps, "burst": burst}
    created = admin.call("POST", "/api_keys", json=body)
    err.print(f"key {created['name']} created: {created['id']} in {created['workspace_id']} (shown once, keep it)")
    out.print(created["key"], markup=False)


@app.command("list")
def list_keys(
    ctx: typer.Context,
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", help="Only this workspace's.")] = None,
    status: Annotated[str | None, typer.Option(help="Only keys in this status (active, inactive, archived).")] = None,
) -> None:
    """API keys (their hints, never the keys)."""
    admin = admin_of(ctx)
    params: dict[str, str] = {}
    if workspace is not None:
        params["workspace_id"] = workspace_id(admin, workspace)
    if status is not None:
        params["status"] = status
    table = Table("name", "id", "workspace", "role", "status", "hint", "created", box=None, pad_edge=False)
    for key in admin.pages("/api_keys", **params):
        table.add_row(
            Text(key["name"]),
            key["id"],
            key["workspace_id"],
            key.get("role", ""),
            key.get("status", ""),
            key.get("partial_key_hint") or "",
            when(key.get("created_at")),
        )
    out.print(table)


@app.command()
def revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (apikey_...).")]) -> None:
    """Revoke a key for good: every gateway refuses it at once."""
    revoked = admin_of(ctx).call("POST", f"/api_keys/{key_id}", json={"status": "archived"})
    out.print(f"key {revoked['name']} revoked: {revoked['id']}")
