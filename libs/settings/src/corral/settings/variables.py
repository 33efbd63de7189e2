"""Which environment variable each settings field is read from, and settings errors that name them.

A service's ``Settings`` nests fragments (``nats: NatsSettings``...), each a ``BaseSettings`` with its
own ``env_prefix``; a field's variable is its ``validation_alias`` when it has one, else the prefix
and the field name, upper-cased.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import AliasChoices, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings


@dataclass(frozen=True)
class Variable:
    """One environment variable a settings class reads."""

    name: str
    owner: type[BaseSettings]
    field: str
    info: FieldInfo


def _nested(info: FieldInfo) -> type[BaseSettings] | None:
    kind = info.annotation
    return kind if isinstance(kind, type) and issubclass(kind, BaseSettings) else None


def variable_name(owner: type[BaseSettings], field: str) -> str:
    """The environment variable ``owner.field`` is read from."""
    info = owner.model_fields[field]
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    if isinstance(info.validation_alias, AliasChoices) and isinstance(info.validation_alias.choices[0], str):
        return info.validation_alias.choices[0]
    prefix = str(owner.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def variables(settings_type: type[BaseSettings]) -> Iterator[Variable]:
    """Every variable ``settings_type`` reads, nested fragments included, in declaration order."""
    for field, info in settings_type.model_fields.items():
        nested = _nested(info)
        if nested is not None:
            yield from variables(nested)
        else:
            yield Variable(variable_name(settings_type, field), settings_type, field, info)


def _classes(settings_type: type[BaseSettings]) -> Iterator[type[BaseSettings]]:
    yield settings_type
    for info in settings_type.model_fields.values():
        nested = _nested(info)
        if nested is not None:
            yield from _classes(nested)


def _aliases(info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return []


def _where(owner: type[BaseSettings], loc: tuple[int | str, ...]) -> str | None:
    """The variable an error at ``loc`` of ``owner`` is about (None: the class as a whole).

    A field read under an alias is located by that alias; when only a deprecated old name of it
    (``renamed``) is set, that is the one named, with the new one."""
    if not loc or not isinstance(loc[0], str):
        return None
    key = loc[0]
    field = key if key in owner.model_fields else None
    for name, info in owner.model_fields.items():
        if field is None and key.upper() in (alias.upper() for alias in _aliases(info)):
            field = name
    if field is None:
        return None
    nested = _nested(owner.model_fields[field])
    if nested is not None:
        return _where(nested, loc[1:])
    new = variable_name(owner, field)
    old = [alias for alias in _aliases(owner.model_fields[field])[1:] if alias in os.environ]
    if new not in os.environ and old:
        return f"{old[0]} (deprecated: now {new})"
    return new


def describe(exc: ValidationError, settings_type: type[BaseSettings]) -> str:
    """``exc`` as one line naming each variable at fault, without the values given (they may be secrets)."""
    owner = next((c for c in _classes(settings_type) if c.__name__ == exc.title), settings_type)
    problems: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        where = _where(owner, tuple(error["loc"]))
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)
