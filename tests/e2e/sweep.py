"""Canary sweeps the e2e tests share: every secret a test gives Corral is a unique canary, and
afterwards these look for each one where no secret may be: the sandbox (its configuration, every
process's environ and cmdline, its files, ``.git`` included), every JetStream stream, every Postgres
row, every service log, every span the trace collector wrote, and the stack's whole state directory
(all of it but OpenBao's own storage, where the secrets are kept encrypted).
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import tarfile
from pathlib import Path

import asyncpg
import docker
import nats
from nats.js.errors import NotFoundError

from corral.contracts import subjects
from corral.devstack.stack import Stack

CANARY_PREFIX = "corralcanary"


class Canaries:
    """Unique secrets; every one is swept for afterwards."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(6)
        self.all: list[str] = []

    def new(self, label: str) -> str:
        value = f"{CANARY_PREFIX}-{self.run}-{label}-{secrets.token_hex(8)}"
        self.all.append(value)
        return value


async def admin_nats(stack: Stack) -> nats.aio.client.Client:
    settings = stack.nats_settings()
    password = settings.password.get_secret_value() if settings.password else None
    return await nats.connect(stack.nats_url, user=settings.user, password=password)


async def sweep(stack: Stack, canaries: list[str]) -> list[str]:
    """Where any canary appears: every message of every JetStream stream (logs, KV buckets, object
    stores), every row of every Postgres table, every service log."""
    found: list[str] = []
    needles = [c.encode() for c in canaries]

    def check(where: str, data: bytes) -> None:
        for needle in needles:
            if needle in data:
                found.append(f"{where}: {needle.decode()[:40]}")

    nc = await admin_nats(stack)
    try:
        js = nc.jetstream()
        streams = await js.streams_info()
        names = {s.config.name for s in streams}
        assert {subjects.SESSIONS_STREAM, subjects.CATALOG_STREAM, f"KV_{subjects.IDEMPOTENCY_BUCKET}"} <= names
        for info in streams:
            for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, seq)
                except NotFoundError:
                    continue
                check(f"{info.config.name}#{seq}", (msg.data or b"") + json.dumps(msg.headers or {}).encode())
    finally:
        await nc.close()

    conn = await asyncpg.connect(stack.database_url)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert {"vaults", "vault_credentials"} <= {t["tablename"] for t in tables}
        for table in tables:
            for row in await conn.fetch(f'SELECT t::text AS row FROM "{table["tablename"]}" t'):
                check(f"postgres {table['tablename']}", row["row"].encode())
    finally:
        await conn.close()

    logs = sorted(stack.state.logs_dir.glob("*"))
    assert any(p.name == "credential-proxy.log" for p in logs)
    for path in logs:
        if path.is_file():
            check(f"log {path.name}", path.read_bytes())
    return found


async def sweep_container(stack: Stack, short_id: str, tokens: tuple[str, ...], *, expect: bytes | None = None) -> None:
    """No token in the container: its configuration, every process's environ and cmdline, its files.
    ``expect``: what must be found to show the environments were read (default: the session's clone
    and proxy variable)."""

    def read() -> bytes:
        engine = docker.DockerClient(base_url=stack.docker_host)
        try:
            [container] = [c for c in engine.containers.list() if c.id.startswith(short_id)]
            found = json.dumps(engine.api.inspect_container(container.id)).encode()
            # read as root, with no token on any command line
            for path in ("environ", "cmdline"):
                result = container.exec_run(
                    ["sh", "-c", f"for f in /proc/[0-9]*/{path}; do cat $f; echo; done"], user="root"
                )
                found += result.output
            for directory in ("/workspace", "/tmp", "/home"):
                stream, _ = container.get_archive(directory)
                archive = b"".join(stream)
                with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                    for member in tar.getmembers():
                        handle = tar.extractfile(member) if member.isfile() else None
                        if handle is not None:
                            found += handle.read()
            if expect is not None:
                assert expect in found, "the processes' environments were read"
                return found
            assert b"http_proxy=http://127.0.0.1:3128" in found, "the processes' environments were read"
            config = container.exec_run(["cat", "/workspace/demo/.git/config"]).output
            assert b"git.corral.invalid" in config, config
            return found
        finally:
            engine.close()

    found = await asyncio.to_thread(read)
    for token in tokens:
        assert token.encode() not in found, "a token is in the sandbox"


async def sweep_postgres(stack: Stack, tokens: tuple[str, ...]) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
        )
        assert tables
        for row in tables:
            name = f'"{row["table_schema"]}"."{row["table_name"]}"'
            for record in await conn.fetch(f"SELECT t::text AS t FROM {name} t"):
                for token in tokens:
                    assert token not in record["t"], f"a token is in Postgres table {name}"
    finally:
        await conn.close()


def sweep_state_dir(stack: Stack, tokens: tuple[str, ...]) -> None:
    """Every file of the stack (NATS's streams and KV, Postgres's files, every service's log), but
    OpenBao's own storage, where the tokens are kept encrypted."""
    root = stack.state.root
    openbao = root / "data" / "openbao"
    checked = 0
    for path in root.rglob("*"):
        if not path.is_file() or openbao in path.parents:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        checked += 1
        for token in tokens:
            assert token.encode() not in data, f"a token is in {path.relative_to(root)}"
    assert checked > 10 and any(p.name == "credential-proxy.log" for p in Path(root / "logs").iterdir())


def sweep_spans(stack: Stack, canaries: list[str]) -> list[str]:
    """Which canaries are in the spans the trace collector wrote (every span of every service, its
    attributes, events and resource); the file must exist and hold spans."""
    path = stack.collector.spans_file
    assert path.exists(), "the trace collector wrote no spans"
    written = path.read_bytes()
    assert b"resourceSpans" in written, "the trace collector's file holds no spans"
    return [f"span file: {c[:40]}" for c in canaries if c.encode() in written]
