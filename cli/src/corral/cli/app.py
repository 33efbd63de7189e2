"""The ``corral`` command tree; ``main`` turns every expected failure into one line and an exit status."""

from __future__ import annotations

from typing import Annotated, Any

import anthropic
import click
import typer

from corral.cli import agents, environments, keys, sessions, workspaces
from corral.cli.context import Root
from corral.cli.failure import Failure
from corral.cli.output import err
from corral.cli.status import status

app = typer.Typer(
    name="corral",
    help="Corral from the command line: agents and environments from files, sessions live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(agents.app, name="agents")
app.add_typer(environments.app, name="environments")
app.add_typer(sessions.app, name="sessions")
app.add_typer(keys.app, name="keys")
app.add_typer(workspaces.app, name="workspaces")
app.command()(status)


@app.callback()
def root(
    ctx: typer.Context,
    base_url: Annotated[
        str | None,
        typer.Option(envvar="ANTHROPIC_BASE_URL", help="The gateway (default: .corral/env's).", show_default=False),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="ANTHROPIC_API_KEY", help="The API key (default: .corral/env's).", show_default=False),
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(
            envvar="CORRAL_ADMIN_KEY",
            help="For keys and workspaces (default: .corral/admin-key, else the API key).",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = Root(base_url=base_url, api_key=api_key, admin_key=admin_key)


def _api_message(error: anthropic.APIStatusError) -> str:
    body: Any = error.body
    detail = body.get("error", body) if isinstance(body, dict) else None
    message = detail.get("message") if isinstance(detail, dict) else None
    return str(message or error.message)


def explain(error: BaseException) -> tuple[str, int] | None:
    """The one line (and exit status) for an error a user can meet; ``None`` for a bug."""
    if isinstance(error, Failure):
        return error.message, error.exit_code
    if isinstance(error, anthropic.APIConnectionError):
        url = error.request.url
        return f"cannot reach Corral at {url.scheme}://{url.netloc.decode()}: is it running? (`make up`)", 1
    if isinstance(error, anthropic.AuthenticationError):
        return "the API key was refused (401): check ANTHROPIC_API_KEY, --api-key or .corral/env", 1
    if isinstance(error, anthropic.PermissionDeniedError):
        return f"not allowed (403): {_api_message(error)}", 1
    if isinstance(error, anthropic.NotFoundError):
        return f"not found (404): {_api_message(error)}", 1
    if isinstance(error, anthropic.APIStatusError):
        return f"Corral refused the request ({error.status_code}): {_api_message(error)}", 1
    if isinstance(error, click.exceptions.Abort):
        return "aborted", 130
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", 130
    return None


def main() -> None:
    try:
        app()
    except (Exception, KeyboardInterrupt) as error:
        explained = explain(error)
        if explained is None:
            raise
        message, code = explained
        err.print(f"error: {message}", markup=False)
        raise SystemExit(code) from None
