"""Session budgets (managed-agents-api.md section 15): what a session spent, and whether it may ask
the model again. Pure.

A budget is ``{"type": "limit", "max_list_cost": {"amount": "<cents>", "currency": "USD"}}``: a cap
on the session's *list cost*, the tokens its model requests used priced at the list prices of
``corral.harness.pricing`` (input, output, cache reads and cache writes each at their own rate).
``Spend`` is the fold of the log's ``span.model_request_end`` usage, per model; ``check`` runs
before every model request. The budget is reached when

- the list cost, rounded up to whole cents, is at or above ``max_list_cost`` (so a request is never
  started once the cap is met; the request that crosses it is finished, as one request is the
  smallest unit the cost is known in), or
- the session used, or is about to ask, a model with no list price: the budget cannot measure it
  (the API's ``budget_reached`` covers this case too). Add a price for it
  (``CORRAL_HARNESS_MODEL_PRICES``) or remove the session's budget.

A session without a budget is never stopped, whatever its models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from corral.harness.pricing import Price, price_of

_PER_CENT: Decimal = Decimal(1_000_000) / Decimal(100)
"""Tokens x USD-per-million-tokens / this = cents."""


@dataclass
class Tokens:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def add(self, usage: Mapping[str, Any]) -> None:
        self.input += _count(usage.get("input_tokens"))
        self.output += _count(usage.get("output_tokens"))
        self.cache_read += _count(usage.get("cache_read_input_tokens"))
        self.cache_write += _count(usage.get("cache_creation_input_tokens"))

    def usage(self) -> dict[str, int]:
        """As a ``span.model_request_end``'s ``model_usage`` (empty when nothing was used)."""
        if not (self.input or self.output or self.cache_read or self.cache_write):
            return {}
        return {
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_write,
        }

    def cents(self, price: Price) -> Decimal:
        """The exact list cost of these tokens at ``price``, in cents."""
        total = (
            self.input * price.input
            + self.output * price.output
            + self.cache_read * price.cache_read
            + self.cache_write * price.cache_write
        )
        return total / _PER_CENT


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass
class Spend:
    """Tokens used per model, folded from ``span.model_request_end`` events."""

    by_model: dict[str, Tokens] = field(default_factory=dict)

    def add(self, model: str, usage: Mapping[str, Any]) -> None:
        self.by_model.setdefault(model, Tokens()).add(usage)

    def plus(self, model: str, usage: Mapping[str, Any]) -> Spend:
        """A copy of this spend with ``usage`` of ``model`` added."""
        copy = Spend.restore(self.state())
        copy.add(model, usage)
        return copy

    def totals(self) -> Tokens:
        total = Tokens()
        for tokens in self.by_model.values():
            total.input += tokens.input
            total.output += tokens.output
            total.cache_read += tokens.cache_read
            total.cache_write += tokens.cache_write
        return total

    def state(self) -> dict[str, Any]:
        return {model: asdict(tokens) for model, tokens in self.by_model.items()}

    @classmethod
    def restore(cls, state: Mapping[str, Any]) -> Spend:
        return cls({str(model): Tokens(**tokens) for model, tokens in state.items()})


def unpriced(models: Iterable[str], prices: Mapping[str, Price]) -> list[str]:
    """The models in ``models`` that have no list price, sorted."""
    return sorted({model for model in models if price_of(model, prices) is None})


def list_cost_cents(spend: Spend, prices: Mapping[str, Price]) -> int:
    """The list cost of ``spend`` in whole cents, rounded up (models with no price count nothing)."""
    exact = Decimal(0)
    for model, tokens in spend.by_model.items():
        price = price_of(model, prices)
        if price is not None:
            exact += tokens.cents(price)
    return math.ceil(exact)


def max_list_cost_cents(budget: object) -> int | None:
    """The cap of a stored budget in cents; ``None`` for no budget (or one this harness cannot read)."""
    if not isinstance(budget, Mapping) or budget.get("type") != "limit":
        return None
    cap = budget.get("max_list_cost")
    amount = cap.get("amount") if isinstance(cap, Mapping) else None
    return int(amount) if isinstance(amount, str) and amount.isdigit() else None


@dataclass(frozen=True)
class Verdict:
    """``check``'s answer for a session with a budget."""

    reached: bool
    list_cost: int
    """Cents, rounded up."""
    max_list_cost: int
    unpriced: tuple[str, ...] = ()
    """Models the budget cannot measure (used so far, or the next request's)."""


def check(budget: object, spend: Spend, next_model: str, prices: Mapping[str, Price]) -> Verdict | None:
    """Whether a session with ``budget`` that spent ``spend`` may ask ``next_model``; ``None`` when
    it has no budget (nothing to enforce)."""
    cap = max_list_cost_cents(budget)
    if cap is None:
        return None
    missing = tuple(unpriced([*spend.by_model, next_model], prices))
    cost = list_cost_cents(spend, prices)
    return Verdict(reached=bool(missing) or cost >= cap, list_cost=cost, max_list_cost=cap, unpriced=missing)


def usage_snapshot(spend: Spend, prices: Mapping[str, Price]) -> dict[str, Any]:
    """The ``usage`` of a ``session.usage`` event: cumulative tokens and the list cost."""
    total = spend.totals()
    return {
        "input_tokens": total.input,
        "output_tokens": total.output,
        "cache_read_input_tokens": total.cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": total.cache_write, "ephemeral_1h_input_tokens": 0},
        "list_cost": {"amount": str(list_cost_cents(spend, prices)), "currency": "USD"},
    }
