"""The script document (scenarios of scripted turns) and how requests are matched to it.

A script is a list of scenarios. A scenario is picked by searching its ``match`` regex
in the text of the first user message of the conversation; the turn within it is the
number of assistant messages already in the request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

StopReason = Literal[
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]

ERROR_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ScriptError(ValueError):
    """A script document that cannot be used; the message names the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextBlockSpec(_Strict):
    type: Literal["text"]
    text: str


class ToolUseBlockSpec(_Strict):
    type: Literal["tool_use"]
    name: str = Field(min_length=1)
    input: dict[str, JsonValue] = Field(default_factory=dict)


BlockSpec = Annotated[TextBlockSpec | ToolUseBlockSpec, Field(discriminator="type")]


class UsageSpec(_Strict):
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)


class ErrorSpec(_Strict):
    status: int = Field(ge=400, le=599)
    type: str | None = None
    message: str = "Scripted error from Corral's embedded model."
    retry_after_ms: int | None = Field(default=None, ge=1)

    @property
    def error_type(self) -> str:
        if self.type is not None:
            return self.type
        if self.status in ERROR_TYPE_BY_STATUS:
            return ERROR_TYPE_BY_STATUS[self.status]
        return "invalid_request_error" if self.status < 500 else "api_error"


class Turn(_Strict):
    content: list[BlockSpec] = Field(default_factory=list)
    stop_reason: StopReason | None = None
    usage: UsageSpec | None = None
    first_byte_delay_ms: int = Field(default=0, ge=0)
    chunk_delay_ms: int = Field(default=0, ge=0)
    error: ErrorSpec | None = None
    fail_times: int | None = Field(default=None, ge=0)

    @field_validator("first_byte_delay_ms", "chunk_delay_ms", mode="before")
    @classmethod
    def _null_delay_is_zero(cls, value: object) -> object:
        return 0 if value is None else value

    @model_validator(mode="after")
    def _fail_times_needs_error(self) -> Turn:
        if self.fail_times and self.error is None:
            raise ValueError("fail_times is set but error is not")
        return self

    @property
    def effective_stop_reason(self) -> StopReason:
        if self.stop_reason is not None:
            return self.stop_reason
        if any(isinstance(block, ToolUseBlockSpec) for block in self.content):
            return "tool_use"
        return "end_turn"


class Scenario(_Strict):
    name: str = Field(min_length=1)
    match: str
    turns: list[Turn] = Field(min_length=1)

    @field_validator("match")
    @classmethod
    def _match_compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    def matches(self, first_user_text: str) -> bool:
        return re.search(self.match, first_user_text) is not None


class ScriptDocument(_Strict):
    scenarios: list[Scenario]

    @model_validator(mode="after")
    def _names_unique(self) -> ScriptDocument:
        seen: set[str] = set()
        for scenario in self.scenarios:
            if scenario.name in seen:
                raise ValueError(f"duplicate scenario name {scenario.name!r}")
            seen.add(scenario.name)
        return self


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field by its dotted path."""
    parts: list[str] = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def parse_script(raw: bytes | str) -> ScriptDocument:
    """Parse and validate a JSON script document, raising ScriptError on any problem."""
    try:
        return ScriptDocument.model_validate_json(raw)
    except ValidationError as exc:
        raise ScriptError(f"invalid script: {describe_validation_error(exc)}") from exc


def load_script_file(path: Path) -> ScriptDocument:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScriptError(f"cannot read script file {path}: {exc}") from exc
    return parse_script(raw)


@dataclass(frozen=True)
class Match:
    """The scenario and turn index a request was matched to."""

    scenario: Scenario
    turn_index: int

    @property
    def turn(self) -> Turn | None:
        """The scripted turn, or None when the script is exhausted."""
        if self.turn_index < len(self.scenario.turns):
            return self.scenario.turns[self.turn_index]
        return None


class ScenarioBook:
    """The scenarios in force: runtime-installed ones first, then the startup file's.

    Installing a document puts its scenarios (in document order) ahead of earlier
    runtime scenarios, and replaces any earlier runtime scenario with the same name.
    It also resets the ``fail_times`` counters of the scenarios it names.
    """

    def __init__(self, file_scenarios: Sequence[Scenario] = ()) -> None:
        self._file: tuple[Scenario, ...] = tuple(file_scenarios)
        self._runtime: list[Scenario] = []
        self._failures: dict[tuple[str, int], int] = {}

    @property
    def names(self) -> list[str]:
        return [scenario.name for scenario in self._ordered()]

    @property
    def runtime_names(self) -> list[str]:
        return [scenario.name for scenario in self._runtime]

    def install(self, document: ScriptDocument) -> list[str]:
        incoming = {scenario.name for scenario in document.scenarios}
        kept = [scenario for scenario in self._runtime if scenario.name not in incoming]
        self._runtime = [*document.scenarios, *kept]
        self._reset_failures(incoming)
        return [scenario.name for scenario in document.scenarios]

    def clear(self, name: str | None = None) -> list[str]:
        """Remove runtime scenarios (all, or the one named); returns the removed names."""
        removed = [s.name for s in self._runtime if name is None or s.name == name]
        self._runtime = [s for s in self._runtime if s.name not in removed]
        self._reset_failures(removed)
        return removed

    def match(self, first_user_text: str, turn_index: int) -> Match | None:
        for scenario in self._ordered():
            if scenario.matches(first_user_text):
                return Match(scenario=scenario, turn_index=turn_index)
        return None

    def should_fail(self, match: Match) -> bool:
        """Whether this request gets the turn's scripted error (counts the attempt)."""
        turn = match.turn
        if turn is None or turn.error is None:
            return False
        if turn.fail_times is None:
            return True
        key = (match.scenario.name, match.turn_index)
        seen = self._failures.get(key, 0)
        self._failures[key] = seen + 1
        return seen < turn.fail_times

    def _ordered(self) -> Iterable[Scenario]:
        yield from self._runtime
        runtime = {scenario.name for scenario in self._runtime}
        yield from (scenario for scenario in self._file if scenario.name not in runtime)

    def _reset_failures(self, names: Iterable[str]) -> None:
        wanted = set(names)
        self._failures = {k: v for k, v in self._failures.items() if k[0] not in wanted}
