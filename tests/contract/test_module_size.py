"""No hand-written Python module of Corral's code is longer than a person can hold in their head:
400 lines at most under ``libs/``, ``services/``, ``bench/`` and ``infra/``. Generated files are
exempt, each named here."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = ("libs", "services", "bench", "infra")
MOST_LINES = 400

#: Generated modules, exempt from the limit (paths relative to the repository). None today: the
#: generated artefacts (``proto/``) are JSON, not Python.
GENERATED: frozenset[str] = frozenset()


def modules() -> list[Path]:
    """The Python files git tracks or would track (untracked ones included, ignored ones not)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *TREES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [ROOT / name for name in listed if name.endswith(".py") and (ROOT / name).is_file()]


def offenders(paths: list[Path], *, root: Path = ROOT, generated: frozenset[str] = GENERATED) -> list[str]:
    """``<path>: <lines> lines`` for each module over the limit and not generated, longest first."""
    over = []
    for path in paths:
        name = path.relative_to(root).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MOST_LINES and name not in generated:
            over.append((lines, name))
    return [f"{name}: {lines} lines" for lines, name in sorted(over, reverse=True)]


def test_no_module_is_over_400_lines() -> None:
    found = modules()
    assert len(found) > 100  # the listing really covers the code
    over = offenders(found)
    assert not over, (
        f"modules over {MOST_LINES} lines (split each into modules named for what they hold, or, for a "
        "generated file, add it to GENERATED):\n" + "\n".join(over)
    )


def test_every_exempt_module_exists() -> None:
    """An exemption outliving its file would quietly exempt whatever takes its name next."""
    assert all((ROOT / name).is_file() for name in GENERATED)


def test_a_long_module_is_named_unless_generated(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    files = {"svc/long.py": MOST_LINES + 1, "svc/short.py": MOST_LINES, "svc/made.py": MOST_LINES + 50}
    for name, lines in files.items():
        (tmp_path / name).write_text("x = 1\n" * lines)
    paths = [tmp_path / name for name in files]
    assert offenders(paths, root=tmp_path, generated=frozenset()) == [
        f"svc/made.py: {MOST_LINES + 50} lines",
        f"svc/long.py: {MOST_LINES + 1} lines",
    ]
    assert offenders(paths, root=tmp_path, generated=frozenset({"svc/made.py"})) == [
        f"svc/long.py: {MOST_LINES + 1} lines"
    ]
