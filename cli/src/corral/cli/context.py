"""What every command gets from the root options: the connection, and a client made on first use (so
``--help`` and completion work with no Corral configured)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import typer

from corral.cli.admin import AdminClient, admin_key_file
from corral.cli.connection import Connection


@dataclass
class Root:
    base_url: str | None
    api_key: str | None
    admin_key: str | None = None
    _connection: Connection | None = field(default=None, init=False)
    _client: anthropic.Anthropic | None = field(default=None, init=False)

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = Connection.resolve(self.base_url, self.api_key, cwd=Path.cwd())
        return self._connection

    @property
    def client(self) -> anthropic.Anthropic:
        if self._client is None:
            self._client = self.connection.client()
        return self._client


def root_of(ctx: typer.Context) -> Root:
    root = ctx.find_root().obj
    assert isinstance(root, Root)
    return root


def client_of(ctx: typer.Context) -> anthropic.Anthropic:
    return root_of(ctx).client


def admin_of(ctx: typer.Context) -> AdminClient:
    root = root_of(ctx)
    connection = root.connection
    key = root.admin_key or admin_key_file(Path.cwd()) or connection.api_key
    return AdminClient(connection.base_url, key)
