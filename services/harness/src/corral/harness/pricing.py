"""List prices of models, the one table session budgets are measured with. Pure.

``DEFAULT_PRICES`` holds the public list prices in USD per million tokens, by model id prefix (the
longest matching prefix wins, so ``claude-opus-4-5`` is priced apart from ``claude-opus-4``):
``input``, ``output``, ``cache_read`` (prompt-cache reads) and ``cache_write`` (prompt-cache
writes, at the 5-minute rate: the model's usage does not say which lifetime a write had, and the
5-minute rate is the lower one).

The operator overrides or extends it with ``CORRAL_HARNESS_MODEL_PRICES``: a JSON object, or the
path of a file holding one, mapping a model id prefix to its four prices, for example
``{"claude-sonnet-4": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}}``. Each
entry replaces the default entry of that prefix (or adds one); the other defaults stay. A model no
prefix matches has no list price: a session with a budget cannot measure it (``corral.harness.budget``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from corral.contracts.prices import LIST_PRICES

PRICE_FIELDS: Final = ("input", "output", "cache_read", "cache_write")


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal


def _price(input: str, output: str, cache_read: str, cache_write: str) -> Price:
    return Price(Decimal(input), Decimal(output), Decimal(cache_read), Decimal(cache_write))


#: Public list prices (USD per million tokens) by model id prefix; longest prefix wins (the table
#: itself is ``corral.contracts.prices``, which the gateway's console estimates costs with too).
DEFAULT_PRICES: Final[Mapping[str, Price]] = {prefix: _price(**fields) for prefix, fields in LIST_PRICES.items()}


class PriceTableError(ValueError):
    """The override is not a price table; the message says what is wrong with it."""


def price_of(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The list price of ``model`` (longest matching prefix), or ``None`` if it has none."""
    matches = [prefix for prefix in prices if model.startswith(prefix)]
    return prices[max(matches, key=len)] if matches else None


def _amount(prefix: str, name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceTableError(f"{prefix}.{name}: expected a number of USD per million tokens")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise PriceTableError(f"{prefix}.{name}: {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise PriceTableError(f"{prefix}.{name}: a price must be a finite number of 0 or more")
    return amount


def parse_prices(table: Any) -> dict[str, Price]:
    """A price table from decoded JSON (``{prefix: {input, output, cache_read, cache_write}}``).

    Raises:
        PriceTableError: naming the first entry that is not a price.
    """
    if not isinstance(table, dict):
        raise PriceTableError("expected a JSON object mapping a model id prefix to its prices")
    parsed: dict[str, Price] = {}
    for prefix, entry in table.items():
        if not prefix:
            raise PriceTableError("a model id prefix must not be empty")
        if not isinstance(entry, dict) or set(entry) != set(PRICE_FIELDS):
            raise PriceTableError(f"{prefix}: expected exactly the keys {', '.join(PRICE_FIELDS)}")
        parsed[prefix] = Price(*(_amount(prefix, name, entry[name]) for name in PRICE_FIELDS))
    return parsed


def load_prices(override: str | None) -> dict[str, Price]:
    """``DEFAULT_PRICES`` with the operator's override (a JSON object, or a path to a JSON file) applied.

    Raises:
        PriceTableError: the override cannot be read or is not a price table.
    """
    prices = dict(DEFAULT_PRICES)
    if override is None or not override.strip():
        return prices
    text = override
    if not override.lstrip().startswith("{"):
        try:
            text = Path(override).read_text(encoding="utf-8")
        except OSError as exc:
            raise PriceTableError(f"cannot read the price file {override!r}: {exc.strerror}") from None
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PriceTableError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    prices.update(parse_prices(decoded))
    return prices
