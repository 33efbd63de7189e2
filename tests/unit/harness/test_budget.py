"""Session budgets: list prices, the spend folded from the log, and the check before each model request."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from corral.harness.budget import Spend, check, list_cost_cents, max_list_cost_cents, usage_snapshot
from corral.harness.pricing import DEFAULT_PRICES, Price, PriceTableError, load_prices, price_of

#: $1, $2, $0.50 and $4 per million input, output, cache-read and cache-write tokens.
PRICES = {"model-a": Price(Decimal(1), Decimal(2), Decimal("0.5"), Decimal(4))}
MILLION = 1_000_000


def budget(cents: int) -> dict[str, object]:
    return {"type": "limit", "max_list_cost": {"amount": str(cents), "currency": "USD"}}


def spent(model: str = "model-a", **usage: int) -> Spend:
    spend = Spend()
    spend.add(model, usage)
    return spend


@pytest.mark.parametrize(
    ("usage", "cents"),
    [
        ({"input_tokens": MILLION}, 100),
        ({"output_tokens": MILLION}, 200),
        ({"cache_read_input_tokens": MILLION}, 50),
        ({"cache_creation_input_tokens": MILLION}, 400),
        (
            {
                "input_tokens": MILLION,
                "output_tokens": MILLION,
                "cache_read_input_tokens": MILLION,
                "cache_creation_input_tokens": MILLION,
            },
            750,
        ),
    ],
)
def test_each_kind_of_token_is_priced_at_its_own_rate(usage: dict[str, int], cents: int) -> None:
    assert list_cost_cents(spent(**usage), PRICES) == cents


def test_the_cost_is_rounded_up_to_whole_cents_and_summed_across_requests() -> None:
    spend = spent(input_tokens=1)  # $0.000001
    assert list_cost_cents(spend, PRICES) == 1
    spend.add("model-a", {"input_tokens": 5_000, "output_tokens": 2_500})  # + $0.01
    assert list_cost_cents(spend, PRICES) == 2
    assert list_cost_cents(Spend(), PRICES) == 0


def test_without_a_budget_nothing_is_enforced_even_for_an_unpriced_model() -> None:
    assert check(None, spent("mystery", input_tokens=MILLION), "mystery", PRICES) is None


def test_the_budget_is_reached_once_the_cost_meets_the_cap() -> None:
    spend = spent(output_tokens=MILLION // 2)  # $1.00
    under = check(budget(101), spend, "model-a", PRICES)
    at = check(budget(100), spend, "model-a", PRICES)
    assert under is not None and not under.reached and under.list_cost == 100
    assert at is not None and at.reached and (at.list_cost, at.max_list_cost) == (100, 100)


def test_cache_tokens_count_toward_the_budget() -> None:
    spend = spent(cache_read_input_tokens=MILLION, cache_creation_input_tokens=MILLION // 4)  # $0.50 + $1.00
    verdict = check(budget(150), spend, "model-a", PRICES)
    assert verdict is not None and verdict.reached and verdict.list_cost == 150


def test_a_model_with_no_list_price_reaches_the_budget_because_it_cannot_be_measured() -> None:
    about_to_ask = check(budget(10_000), Spend(), "mystery-model", PRICES)
    already_used = check(budget(10_000), spent("mystery-model", input_tokens=1), "model-a", PRICES)
    for verdict in (about_to_ask, already_used):
        assert verdict is not None and verdict.reached
        assert verdict.unpriced == ("mystery-model",)


def test_a_zero_budget_allows_no_request() -> None:
    verdict = check(budget(0), Spend(), "model-a", PRICES)
    assert verdict is not None and verdict.reached


def test_only_a_limit_budget_with_an_integer_amount_is_enforced() -> None:
    assert max_list_cost_cents(budget(2500)) == 2500
    assert max_list_cost_cents({"type": "other"}) is None
    assert max_list_cost_cents(None) is None


def test_the_usage_snapshot_carries_tokens_and_list_cost() -> None:
    spend = spent(input_tokens=10, output_tokens=MILLION, cache_read_input_tokens=3, cache_creation_input_tokens=4)
    assert usage_snapshot(spend, PRICES) == {
        "input_tokens": 10,
        "output_tokens": MILLION,
        "cache_read_input_tokens": 3,
        "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 0},
        "list_cost": {"amount": "201", "currency": "USD"},
    }


def test_the_spend_survives_a_snapshot() -> None:
    spend = spent(input_tokens=3, output_tokens=4)
    spend.add("model-b", {"cache_read_input_tokens": 5})
    assert Spend.restore(spend.state()) == spend


def test_the_default_table_prices_models_by_their_longest_prefix() -> None:
    opus_4_5 = price_of("claude-opus-4-5-20251101", DEFAULT_PRICES)
    opus_4_1 = price_of("claude-opus-4-1", DEFAULT_PRICES)
    sonnet = price_of("claude-sonnet-4-6", DEFAULT_PRICES)
    assert opus_4_5 is not None and opus_4_5.output == Decimal(25)
    assert opus_4_1 is not None and opus_4_1.output == Decimal(75)
    assert sonnet is not None and (sonnet.input, sonnet.cache_read) == (Decimal(3), Decimal("0.30"))
    assert price_of("gpt-5", DEFAULT_PRICES) is None


def test_the_operator_overrides_and_extends_the_table_with_json_or_a_file(tmp_path: Path) -> None:
    entry = '{"claude-sonnet-4": {"input": 1, "output": "2.5", "cache_read": 0, "cache_write": 1.25}}'
    for override in (entry, str(tmp_path / "prices.json")):
        (tmp_path / "prices.json").write_text(entry)
        prices = load_prices(override)
        assert prices["claude-sonnet-4"] == Price(Decimal(1), Decimal("2.5"), Decimal(0), Decimal("1.25"))
        assert prices["claude-opus-4"] == DEFAULT_PRICES["claude-opus-4"]
    assert load_prices(None) == dict(DEFAULT_PRICES)


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ('{"m": {"input": 1}}', "exactly the keys input, output, cache_read, cache_write"),
        ('{"m": {"input": -1, "output": 1, "cache_read": 1, "cache_write": 1}}', "0 or more"),
        ('{"m": {"input": "x", "output": 1, "cache_read": 1, "cache_write": 1}}', "not a number"),
        ('{"m": 1}', "exactly the keys"),
        ("{not json", "not JSON"),
        ("/nonexistent/prices.json", "cannot read the price file"),
    ],
)
def test_a_bad_override_is_refused_saying_what_is_wrong(override: str, says: str) -> None:
    with pytest.raises(PriceTableError, match=says):
        load_prices(override)
