"""Declarative files for ``corral agents apply`` and ``corral environments apply``: reading them, and
deciding whether the object on the server already says what the file says.

Pure (no I/O beyond reading the file): the unit tests drive every rule here.

Two checks decide "unchanged", and both must hold:

* every field the file names matches the server's resolved form (``matches``): the server fills in
  defaults (``model`` becomes ``{id, effort, speed, inference_geo}``, a toolset gains its resolved
  ``default_config`` and each config its ``type``), so a value the file gives is compared with the
  part of the server's value it covers; a field the file leaves out is compared with its default.
  This notices an object changed by someone else since the last apply;
* the digest of the file's content recorded in the object's metadata (``DIGEST_KEY``) at the last
  apply is the file's digest now. This notices what the first check cannot: a nested key removed
  from the file, whose server-side default would still "match".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from corral.cli.failure import Failure

#: The metadata key ``apply`` records the applied file's digest under.
DIGEST_KEY: Final = "corral.apply.sha256"

#: Top-level fields of an agent file, and what leaving one out means (``None``: compare nothing).
AGENT_DEFAULTS: Final[Mapping[str, Any]] = {
    "name": None,
    "model": None,
    "description": "",
    "system": "",
    "tools": [],
    "mcp_servers": [],
    "skills": [],
    "metadata": {},
    "multiagent": None,
    "execution_identity": {"type": "service_account"},
}
AGENT_REQUIRED: Final = ("name", "model")

#: Top-level fields of an environment file and their defaults.
ENVIRONMENT_DEFAULTS: Final[Mapping[str, Any]] = {
    "name": None,
    "description": "",
    "config": None,
    "metadata": {},
}
ENVIRONMENT_REQUIRED: Final = ("name",)

#: Fields compared only when the file names them (their absence says nothing).
_OPTIONAL_WHEN_ABSENT: Final = frozenset({"name", "model", "config", "multiagent"})


@dataclass(frozen=True)
class Spec:
    """One declarative file: its fields as written, and their digest."""

    kind: str
    path: Path
    fields: dict[str, Any]
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", digest_of(self.fields))

    @property
    def name(self) -> str:
        return str(self.fields["name"])


def digest_of(fields: Mapping[str, Any]) -> str:
    """The SHA-256 of the fields' canonical JSON (key order, YAML style and comments do not count)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_spec(path: Path, kind: str) -> Spec:
    """Read an agent (``kind="agent"``) or environment file; a clear ``Failure`` for anything wrong."""
    defaults, required = (
        (AGENT_DEFAULTS, AGENT_REQUIRED) if kind == "agent" else (ENVIRONMENT_DEFAULTS, ENVIRONMENT_REQUIRED)
    )
    try:
        text = path.read_text()
    except OSError as error:
        raise Failure(f"cannot read {path}: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise Failure(f"{path} is not valid YAML{at}: {problem}") from None
    if not isinstance(document, dict):
        raise Failure(f"{path} must be a YAML mapping of {kind} fields such as `name:`")
    unknown = sorted(set(document) - set(defaults))
    if unknown:
        raise Failure(f"{path}: unknown {kind} field(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    missing = [name for name in required if document.get(name) in (None, "")]
    if missing:
        raise Failure(f"{path}: the {kind} needs {' and '.join(f'`{m}:`' for m in missing)}")
    if not isinstance(document["name"], str):
        raise Failure(f"{path}: `name:` must be a string")
    metadata = document.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise Failure(f"{path}: `metadata:` must map names to strings")
    if metadata and DIGEST_KEY in metadata:
        raise Failure(f"{path}: the metadata key {DIGEST_KEY} is kept by `corral ... apply` itself")
    return Spec(kind=kind, path=path, fields=dict(document))


def _normal_effort(value: Any) -> Any:
    """``"high"`` and ``{"type": "high"}`` say the same."""
    return {"type": value} if isinstance(value, str) else value


def normalise(name: str, value: Any) -> Any:
    """A file's value in the shape the server answers with, where the two spellings differ."""
    if name == "model":
        model = {"id": value} if isinstance(value, str) else dict(value)
        if "effort" in model:
            model["effort"] = _normal_effort(model["effort"])
        return model
    if name in ("description", "system") and value is None:
        return ""
    if name in ("tools", "mcp_servers", "skills") and value is None:
        return []
    if name == "metadata" and value is None:
        return {}
    return value


def _named(items: list[Any]) -> dict[str, Any] | None:
    """A list of ``{name: ...}`` mappings by name (``None`` if it is not one)."""
    if not all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in items):
        return None
    return {item["name"]: item for item in items}


def matches(desired: Any, actual: Any, *, key: str | None = None) -> bool:
    """Whether ``actual`` says everything ``desired`` says: mappings by the keys ``desired`` has,
    lists element by element (same length, same order), anything else by equality.

    A toolset's ``configs`` are the exception: the server lists one per tool, resolved, so each
    config the file gives is compared with the server's config of that name."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k], key=k) for k, v in desired.items()
        )
    if key == "configs" and isinstance(desired, list) and isinstance(actual, list):
        wanted, served = _named(desired), _named(actual)
        if wanted is not None and served is not None:
            return all(name in served and matches(c, served[name]) for name, c in wanted.items())
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(matches(d, a) for d, a in zip(desired, actual, strict=True))
        )
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual
    return bool(desired == actual)


@dataclass(frozen=True)
class Plan:
    """What ``apply`` will do to one object: nothing, or send ``body`` (and why)."""

    changed: list[str]
    body: dict[str, Any]

    @property
    def unchanged(self) -> bool:
        return not self.changed


def desired_metadata(spec: Spec) -> dict[str, str]:
    """The object's metadata after the apply: the file's, plus the file's digest."""
    return {**(spec.fields.get("metadata") or {}), DIGEST_KEY: spec.digest}


def metadata_patch(spec: Spec, current: Mapping[str, str]) -> dict[str, str | None]:
    """The metadata patch (upsert, ``None`` deletes) turning ``current`` into the file's metadata."""
    wanted = desired_metadata(spec)
    patch: dict[str, str | None] = {k: v for k, v in wanted.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in wanted})
    return patch


def plan_update(spec: Spec, current: Mapping[str, Any]) -> Plan:
    """Compare the file with the object's current state (its API representation, as a dict)."""
    defaults = AGENT_DEFAULTS if spec.kind == "agent" else ENVIRONMENT_DEFAULTS
    changed: list[str] = []
    body: dict[str, Any] = {}
    for name, default in defaults.items():
        if name == "metadata":
            continue
        if name in spec.fields:
            wanted = normalise(name, spec.fields[name])
        elif name in _OPTIONAL_WHEN_ABSENT:
            continue
        else:
            wanted = default
        if not matches(wanted, normalise(name, current.get(name))):
            changed.append(name)
            body[name] = spec.fields.get(name, default)
    current_metadata = current.get("metadata") or {}
    user_metadata = {k: v for k, v in current_metadata.items() if k != DIGEST_KEY}
    if user_metadata != (spec.fields.get("metadata") or {}):
        changed.append("metadata")
    if current_metadata.get(DIGEST_KEY) != spec.digest and not changed:
        changed.append("file")  # the file changed in a way the server's defaults hide
    if changed:
        # every field the file names: arrays are replaced whole, so nothing stale survives
        for name in defaults:
            if name in spec.fields and name != "metadata":
                body[name] = spec.fields[name]
        body["metadata"] = metadata_patch(spec, current_metadata)
    return Plan(changed=changed, body=body)


def create_body(spec: Spec) -> dict[str, Any]:
    """The create request for a file: its fields, metadata with the digest."""
    body = {k: v for k, v in spec.fields.items() if v is not None}
    body["metadata"] = desired_metadata(spec)
    return body
