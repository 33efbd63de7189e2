"""Reads from the projection: single objects and cursor pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from corral.contracts.admin_rpc import AdminList, AdminPage
from corral.contracts.api.errors import invalid
from corral.contracts.clock import parse_rfc3339
from corral.contracts.rpc import ListEvents, ListObjects, Page
from corral.session_store import pgtext
from corral.session_store.db import Conn
from corral.session_store.domain import cursors


def _time_filters(params: ListObjects | ListEvents, column: str, args: list[Any]) -> list[str]:
    clauses = []
    for suffix, op in (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")):
        value = getattr(params, f"created_at_{suffix}")
        if value is None:
            continue
        try:
            when = parse_rfc3339(value)
        except ValueError:
            raise invalid(f"created_at[{suffix}]: {value!r} is not an RFC 3339 timestamp") from None
        args.append(when)
        clauses.append(f"{column} {op} ${len(args)}")
    return clauses


async def page_by_created(
    conn: Conn,
    *,
    table: str,
    id_column: str,
    workspace_id: str,
    params: ListObjects,
    order: str,
    extra: list[str] | None = None,
    extra_args: list[Any] | None = None,
    bidirectional: bool = False,
) -> tuple[list[asyncpg.Record], str | None, str | None]:
    """A page of ``table`` rows of one workspace ordered by (created_at, id)."""
    args: list[Any] = [workspace_id, *(extra_args or [])]
    where = ["workspace_id = $1", *(extra or [])]
    if not params.include_archived:
        where.append("archived_at IS NULL")
    where += _time_filters(params, "created_at", args)
    direction = "next"
    if params.page:
        key, direction = cursors.decode(params.page, order=order)
        try:
            after = (datetime.fromisoformat(key[0]), str(key[1]))
        except (ValueError, IndexError, TypeError):
            raise invalid("page: not a cursor returned by this API") from None
        args += [after[0], after[1]]
        forward_desc = order == "desc"
        going_down = forward_desc if direction == "next" else not forward_desc
        op = "<" if going_down else ">"
        where.append(f"(created_at, {id_column}) {op} (${len(args) - 1}, ${len(args)})")
    ascending = (order == "asc") == (direction == "next")
    sort = "ASC" if ascending else "DESC"
    args.append(params.limit + 1)
    sql = (
        f"SELECT * FROM {table} WHERE {' AND '.join(where)} "
        f"ORDER BY created_at {sort}, {id_column} {sort} LIMIT ${len(args)}"
    )
    rows = list(await conn.fetch(sql, *args))
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    if direction == "prev":
        rows.reverse()
    next_page = prev_page = None
    if rows:
        first, last = rows[0], rows[-1]
        if more or direction == "prev":
            next_page = cursors.encode(order, [last["created_at"].isoformat(), last[id_column]])
        if bidirectional and (params.page is not None) and (direction == "next" or more):
            prev_page = cursors.encode(order, [first["created_at"].isoformat(), first[id_column]], direction="prev")
    return rows, next_page, prev_page


async def list_events(conn: Conn, params: ListEvents, *, max_bytes: int) -> Page:
    args: list[Any] = [params.session_id]
    where = ["session_id = $1"]
    if params.types:
        args.append(params.types)
        where.append(f"type = ANY(${len(args)}::text[])")
    where += _time_filters(params, "processed_at", args)
    if params.page:
        key, _ = cursors.decode(params.page, order=params.order)
        if not key or not isinstance(key[0], int):
            raise invalid("page: not a cursor returned by this API")
        args.append(key[0])
        where.append(f"seq {'>' if params.order == 'asc' else '<'} ${len(args)}")
    sort = "ASC" if params.order == "asc" else "DESC"
    args.append(params.limit + 1)
    sizes = await conn.fetch(
        f"SELECT seq, octet_length(body) AS size FROM events WHERE {' AND '.join(where)} "
        f"ORDER BY seq {sort} LIMIT ${len(args)}",
        *args,
    )
    # At most ``limit`` events and ``max_bytes`` of them, but always one: a page of one event larger
    # than the bound is still a page, and the next one continues after it.
    taken, total = 0, 0
    for row in sizes[: params.limit]:
        if taken and total + row["size"] > max_bytes:
            break
        taken += 1
        total += row["size"]
    seqs = [r["seq"] for r in sizes[:taken]]
    rows = await conn.fetch(
        f"SELECT body FROM events WHERE session_id = $1 AND seq = ANY($2::bigint[]) ORDER BY seq {sort}",
        params.session_id,
        seqs,
    )
    more = len(sizes) > taken
    next_page = cursors.encode(params.order, [seqs[-1]]) if more and seqs else None
    return Page(data=[pgtext.load(r["body"]) for r in rows], next_page=next_page)


async def admin_page(
    conn: Conn | asyncpg.Pool, *, table: str, id_column: str, params: AdminList, where: list[str], args: list[Any]
) -> tuple[list[asyncpg.Record], bool]:
    """A page of ``table`` ascending by (created_at, id) after ``after_id`` or before ``before_id``
    (the Admin API's cursors), and whether there are more rows that way."""
    where, args = list(where), list(args)
    cursor = params.after_id or params.before_id
    if params.after_id and params.before_id:
        raise invalid("send after_id or before_id, not both")
    if cursor is not None:
        row = await conn.fetchrow(f"SELECT created_at FROM {table} WHERE {id_column} = $1", cursor)
        if row is None:
            which = "after_id" if params.after_id else "before_id"
            raise invalid(f"{which}: {cursor[:128]!r} is not an id this list returned; start without it")
        args += [row["created_at"], cursor]
        op = ">" if params.after_id else "<"
        where.append(f"(created_at, {id_column}) {op} (${len(args) - 1}, ${len(args)})")
    sort = "DESC" if params.before_id else "ASC"
    args.append(params.limit + 1)
    sql = (
        f"SELECT * FROM {table} {'WHERE ' + ' AND '.join(where) if where else ''} "
        f"ORDER BY created_at {sort}, {id_column} {sort} LIMIT ${len(args)}"
    )
    rows = list(await conn.fetch(sql, *args))
    more = len(rows) > params.limit
    rows = rows[: params.limit]
    if params.before_id:
        rows.reverse()
    return rows, more


def admin_page_of(data: list[dict[str, Any]], more: bool) -> AdminPage:
    return AdminPage(
        data=data,
        has_more=more,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
    )
