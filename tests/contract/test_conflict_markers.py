"""No file of the repository holds a merge's conflict markers: a README or a module with
``<<<<<<<`` / ``>>>>>>>`` lines in it was committed half-merged."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def with_markers(files: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in files:
        data = path.read_bytes()
        match = MARKER.search(data)
        if match is not None:
            line = data.count(b"\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(root)}:{line}")
    return found


def test_no_file_holds_conflict_markers() -> None:
    found = with_markers(tracked_files())
    assert not found, f"conflict markers left by a merge (resolve them): {found}"


def test_a_half_merged_file_is_found(tmp_path: Path) -> None:
    clean = tmp_path / "clean.md"
    clean.write_text("# Title\n\n=== not a marker\n")
    half = tmp_path / "half.md"
    half.write_text("a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> branch\n")
    assert with_markers([clean, half], tmp_path) == ["half.md:2"]
