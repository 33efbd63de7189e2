"""Every subject, stream and bucket name is written in ``corral.contracts.subjects`` only: anywhere
else in the services and libraries it is imported, so a rename there renames it everywhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from corral.contracts import subjects

ROOT = Path(__file__).resolve().parents[3]
HOME = ROOT / "libs" / "contracts" / "src" / "corral" / "contracts" / "subjects.py"
#: A subject of Corral's own (``corral.rpc.``, ``corral.sessions.``...).
SUBJECT = re.compile(r"^corral\.(rpc|sessions|catalog|wake|deltas|health|sandbox|egress)\b")
#: Every stream and bucket name the subjects module defines.
NAMES = frozenset(
    value for name, value in vars(subjects).items() if name.endswith(("_STREAM", "_BUCKET")) and isinstance(value, str)
)


def _sources() -> list[Path]:
    return sorted(p for base in ("libs", "services") for p in (ROOT / base).glob("*/src/**/*.py") if p != HOME)


def _named(value: str) -> bool:
    return SUBJECT.match(value) is not None or value in NAMES


def _literals(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _named(node.value):
            found.append((node.lineno, node.value))
    return found


def test_no_subject_stream_or_bucket_name_is_written_outside_the_subjects_module() -> None:
    strays = [f"{p.relative_to(ROOT)}:{line}: {value!r}" for p in _sources() for line, value in _literals(p)]
    assert strays == [], "define these in corral.contracts.subjects and import them:\n" + "\n".join(strays)


def test_the_check_sees_a_stray_name() -> None:
    assert _named("corral.rpc.sandbox.") and _named("corral_leases") and _named("CORRAL_SESSIONS")
    assert {"corral_egress", "corral_sandboxes", "corral_tool_results"} <= NAMES
    assert not _named("corral.session_created") and not _named("corral_compaction")
