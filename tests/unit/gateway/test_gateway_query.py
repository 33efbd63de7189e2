"""Query strings the way the SDK writes them: bracketed arrays and range keys."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from corral.contracts.api.errors import ApiError
from corral.gateway.query import Query, TimeBounds


def query(raw: str) -> Query:
    return Query(QueryParams(raw))


def test_bracketed_arrays_repeat_and_keep_their_order() -> None:
    q = query("statuses%5B%5D=idle&statuses%5B%5D=running&statuses%5B%5D=idle")
    assert q.values("statuses", allowed=("idle", "running")) == ["idle", "running"]
    assert q.values("types") is None


def test_a_value_outside_the_allowed_set_is_refused_by_name() -> None:
    with pytest.raises(ApiError) as raised:
        query("types[]=agent.message&types[]=agent.bogus").values("types", allowed={"agent.message"})
    assert raised.value.status == 400
    assert raised.value.message == "types[]: 'agent.bogus' is not one of agent.message"


def test_too_many_array_values_are_refused() -> None:
    with pytest.raises(ApiError, match="at most 2 values"):
        query("a[]=1&a[]=2&a[]=3").values("a", max_items=2)


def test_range_keys_are_normalised_to_utc_rfc3339() -> None:
    bounds = query("created_at%5Bgte%5D=2026-01-01T02:00:00%2B02:00&created_at[lt]=2026-02-01T00:00:00Z")
    assert bounds.time_bounds("created_at") == TimeBounds(
        gte="2026-01-01T00:00:00.000000Z", lt="2026-02-01T00:00:00.000000Z"
    )


def test_a_naive_timestamp_is_taken_as_utc() -> None:
    assert query("created_at[gt]=2026-01-01T00:00:00").time_bounds("created_at").gt == "2026-01-01T00:00:00.000000Z"


@pytest.mark.parametrize("value", ["yesterday", "2026-01-01", "2026-13-01T00:00:00Z", "1700000000"])
def test_a_timestamp_that_is_not_rfc3339_is_a_400_naming_the_key(value: str) -> None:
    with pytest.raises(ApiError) as raised:
        query(f"created_at[gte]={value}").time_bounds("created_at")
    assert raised.value.status == 400
    assert raised.value.message.startswith("created_at[gte]: ")


def test_a_range_operator_the_endpoint_does_not_offer_is_refused() -> None:
    with pytest.raises(ApiError, match=r"created_at\[gt\]: unsupported filter"):
        query("created_at[gt]=2026-01-01T00:00:00Z").time_bounds("created_at", ops=("gte", "lte"))


def test_integers_are_bounded() -> None:
    assert query("").integer("limit", default=20, ge=1, le=100) == 20
    assert query("limit=100").integer("limit", default=20, ge=1, le=100) == 100
    with pytest.raises(ApiError, match="limit: must be between 1 and 100, got 101"):
        query("limit=101").integer("limit", default=20, ge=1, le=100)
    with pytest.raises(ApiError, match="limit: 'ten' is not an integer"):
        query("limit=ten").integer("limit", default=20, ge=1, le=100)


def test_booleans_and_orders() -> None:
    assert query("include_archived=true").boolean("include_archived") is True
    assert query("include_archived=false").boolean("include_archived") is False
    assert query("").boolean("include_archived") is False
    with pytest.raises(ApiError, match="not a boolean"):
        query("include_archived=yes please").boolean("include_archived")
    assert query("order=asc").order(default="desc") == "asc"
    assert query("").order(default="desc") == "desc"
    with pytest.raises(ApiError, match="order: 'up' is not one of asc, desc"):
        query("order=up").order(default="desc")
