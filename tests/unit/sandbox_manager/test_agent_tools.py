"""The exec agent's tools, run locally in a temporary directory (no Docker): each tool's behaviour
and the errors a model gets back."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.sandbox_manager.agent.program.cancellation import Call
from corral.sandbox_manager.agent.program.globbing import glob_regex
from corral.sandbox_manager.agent.program.protocol import Config, Result
from corral.sandbox_manager.agent.program.shell import ansi_c_quote
from corral.sandbox_manager.agent.program.toolbox import Toolbox


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Toolbox]:
    toolbox = Toolbox(Config(root=str(tmp_path), output_limit=2000))
    try:
        yield toolbox
    finally:
        toolbox.shell.close()


def run(box: Toolbox, tool: str, args: object, timeout_s: float = 10.0) -> Result:
    return box.run(tool, args, Call(id=1, deadline=time.monotonic() + timeout_s, timeout_s=timeout_s))


# --- write / read ---------------------------------------------------------------------------------------
def test_write_creates_parent_directories_and_read_numbers_lines(box: Toolbox, tmp_path: Path) -> None:
    wrote = run(box, "write", {"file_path": "a/b/c.txt", "content": "one\ntwo\nthree\n"})
    assert wrote == Result(f"wrote 14 bytes to {tmp_path}/a/b/c.txt")
    assert run(box, "read", {"file_path": str(tmp_path / "a/b/c.txt")}) == Result(
        "     1\tone\n     2\ttwo\n     3\tthree"
    )


@pytest.mark.parametrize(
    ("view_range", "expected"),
    [([2, 3], "     2\ttwo\n     3\tthree"), ([3, 0], "     3\tthree\n     4\tfour"), ([4, -1], "     4\tfour")],
)
def test_read_view_range_is_one_indexed_and_inclusive_with_end_zero_or_less_to_eof(
    box: Toolbox, view_range: list[int], expected: str
) -> None:
    run(box, "write", {"file_path": "f.txt", "content": "one\ntwo\nthree\nfour\n"})
    assert run(box, "read", {"file_path": "f.txt", "view_range": view_range}) == Result(expected)


@pytest.mark.parametrize(
    ("view_range", "message"),
    [
        ([0, 2], "view_range start_line must be 1 or more"),
        ([3, 2], "view_range end_line 2 is before start_line 3"),
        ([1], "view_range must be [start_line, end_line]"),
        ([9, 10], "view_range starts at line 9 but"),
    ],
)
def test_read_refuses_a_bad_view_range(box: Toolbox, view_range: list[int], message: str) -> None:
    run(box, "write", {"file_path": "f.txt", "content": "one\ntwo\n"})
    result = run(box, "read", {"file_path": "f.txt", "view_range": view_range})
    assert result.is_error and result.text.startswith(message)


def test_read_refuses_binary_files_cleanly(box: Toolbox, tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02" * 10)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    for name in ("blob.bin", "latin1.txt"):
        result = run(box, "read", {"file_path": name})
        assert result.is_error
        assert result.text.startswith(f"{tmp_path}/{name} is a binary file (")
        assert "od -c" in result.text


def test_read_reports_missing_files_and_directories(box: Toolbox, tmp_path: Path) -> None:
    assert run(box, "read", {"file_path": "nope.txt"}) == Result(f"{tmp_path}/nope.txt does not exist", True)
    (tmp_path / "d").mkdir()
    assert run(box, "read", {"file_path": "d"}).text == f"{tmp_path}/d is a directory; list it with glob or bash"
    assert run(box, "read", {}) == Result("file_path must be a non-empty string", True)


def test_read_of_a_large_file_stops_at_the_output_limit_and_says_where(box: Toolbox) -> None:
    run(box, "write", {"file_path": "big.txt", "content": "".join(f"line {i}\n" for i in range(1, 1001))})
    result = run(box, "read", {"file_path": "big.txt"})
    assert not result.is_error
    assert len(result.text) < 2200
    assert "[output truncated before line" in result.text and "read further with view_range" in result.text


def test_an_empty_file_reads_as_empty(box: Toolbox) -> None:
    run(box, "write", {"file_path": "e.txt", "content": ""})
    assert run(box, "read", {"file_path": "e.txt"}).text.endswith("e.txt is empty")


# --- edit -------------------------------------------------------------------------------------------------
def test_edit_replaces_a_unique_string(box: Toolbox, tmp_path: Path) -> None:
    run(box, "write", {"file_path": "m.py", "content": "a = 1\nb = 2\n"})
    result = run(box, "edit", {"file_path": "m.py", "old_string": "b = 2", "new_string": "b = 3"})
    assert result == Result(f"replaced 1 occurrence in {tmp_path}/m.py")
    assert (tmp_path / "m.py").read_text() == "a = 1\nb = 3\n"


def test_edit_fails_clearly_when_the_old_string_is_missing(box: Toolbox, tmp_path: Path) -> None:
    run(box, "write", {"file_path": "m.py", "content": "a = 1\n"})
    result = run(box, "edit", {"file_path": "m.py", "old_string": "a  = 1", "new_string": "a = 2"})
    assert result.is_error and result.text.startswith(f"old_string was not found in {tmp_path}/m.py")
    assert (tmp_path / "m.py").read_text() == "a = 1\n"


def test_edit_fails_clearly_when_the_old_string_is_not_unique(box: Toolbox, tmp_path: Path) -> None:
    run(box, "write", {"file_path": "m.py", "content": "x = 1\nx = 1\nx = 1\n"})
    result = run(box, "edit", {"file_path": "m.py", "old_string": "x = 1", "new_string": "x = 2"})
    assert result.is_error and result.text.startswith(f"old_string occurs 3 times in {tmp_path}/m.py")
    assert "replace_all" in result.text
    assert (tmp_path / "m.py").read_text() == "x = 1\nx = 1\nx = 1\n"


def test_edit_with_replace_all_replaces_every_occurrence(box: Toolbox, tmp_path: Path) -> None:
    run(box, "write", {"file_path": "m.py", "content": "x = 1\nx = 1\n"})
    result = run(box, "edit", {"file_path": "m.py", "old_string": "x", "new_string": "y", "replace_all": True})
    assert result == Result(f"replaced 2 occurrences in {tmp_path}/m.py")
    assert (tmp_path / "m.py").read_text() == "y = 1\ny = 1\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"file_path": "m.py", "old_string": "", "new_string": "z"}, "old_string must not be empty"),
        ({"file_path": "m.py", "old_string": "x", "new_string": "x"}, "old_string and new_string are the same"),
        ({"file_path": "m.py", "old_string": "x"}, "new_string must be a string"),
        ({"file_path": "gone.py", "old_string": "x", "new_string": "y"}, "does not exist"),
    ],
)
def test_edit_rejects_inputs_it_cannot_apply(box: Toolbox, args: dict[str, object], message: str) -> None:
    run(box, "write", {"file_path": "m.py", "content": "x\n"})
    result = run(box, "edit", args)
    assert result.is_error and message in result.text


# --- glob / grep -----------------------------------------------------------------------------------------
def test_glob_matches_doublestar_patterns_newest_first(box: Toolbox, tmp_path: Path) -> None:
    for i, name in enumerate(["old.py", "src/mid.py", "src/deep/new.py", "src/notes.txt"]):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    result = run(box, "glob", {"pattern": "**/*.py"})
    assert result.text.splitlines() == [f"{tmp_path}/src/deep/new.py", f"{tmp_path}/src/mid.py", f"{tmp_path}/old.py"]
    assert run(box, "glob", {"pattern": "*.py", "path": "src"}).text == f"{tmp_path}/src/mid.py"
    assert run(box, "glob", {"pattern": "src/*.{py,txt}"}).text.splitlines() == [
        f"{tmp_path}/src/notes.txt",
        f"{tmp_path}/src/mid.py",
    ]
    assert run(box, "glob", {"pattern": "**/*.rs"}) == Result(f"no files match **/*.rs under {tmp_path}")


def test_doublestar_translation() -> None:
    regex = glob_regex("/w/**/*.py")
    assert regex.fullmatch("/w/a.py") and regex.fullmatch("/w/x/y/a.py")
    assert not regex.fullmatch("/w/a.pyc") and not regex.fullmatch("/v/a.py")
    assert glob_regex("/w/a?/[!x]*").fullmatch("/w/ab/yes") and not glob_regex("/w/a?/[!x]*").fullmatch("/w/ab/xno")
    assert glob_regex("/w/**").fullmatch("/w/any/thing")


def test_grep_returns_path_line_text_and_skips_binary_files(box: Toolbox, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/a.py").write_text("import os\ndef main():\n    return os.getcwd()\n")
    (tmp_path / "b.txt").write_text("nothing here\n")
    (tmp_path / "c.bin").write_bytes(b"\x00def main\x00")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git/config").write_text("def main\n")
    result = run(box, "grep", {"pattern": r"def \w+\(|os\.getcwd"})
    assert result.text.splitlines() == [
        f"{tmp_path}/pkg/a.py:2:def main():",
        f"{tmp_path}/pkg/a.py:3:    return os.getcwd()",
    ]
    assert run(box, "grep", {"pattern": "import", "path": "pkg/a.py"}).text == f"{tmp_path}/pkg/a.py:1:import os"
    assert run(box, "grep", {"pattern": "zzz"}) == Result(f"no matches for 'zzz' under {tmp_path}")
    bad = run(box, "grep", {"pattern": "("})
    assert bad.is_error and bad.text.startswith("invalid regular expression '('")


# --- bash ---------------------------------------------------------------------------------------------------
def test_bash_keeps_the_working_directory_and_variables_between_calls(box: Toolbox, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert run(box, "bash", {"command": "cd sub && export NAME=corral && greet() { echo hi $1; }"}) == Result(
        "(no output)"
    )
    assert run(box, "bash", {"command": "pwd; echo $NAME; greet you"}) == Result(f"{tmp_path}/sub\ncorral\nhi you\n")


def test_bash_reports_output_of_both_streams_and_a_nonzero_exit_code(box: Toolbox) -> None:
    result = run(box, "bash", {"command": "echo out; echo err >&2; exit_code() { return 3; }; exit_code"})
    assert result == Result("out\nerr\n[exit code 3]")


def test_bash_runs_awkward_commands_verbatim(box: Toolbox) -> None:
    command = "printf '%s|' \"it's\" 'a \\\\ b' $'tab\\there'; echo\ncat <<'EOF'\n$HOME stays literal\nEOF\necho é😀"
    assert run(box, "bash", {"command": command}) == Result("it's|a \\\\ b|tab\there|\n$HOME stays literal\né😀\n")
    assert ansi_c_quote("a'b\\c\nd\x01") == "$'a\\'b\\\\c\\nd\\x01'"


def test_bash_does_not_let_a_command_read_the_control_stream(box: Toolbox) -> None:
    assert run(box, "bash", {"command": "cat; echo after"}) == Result("after\n")
    assert run(box, "bash", {"command": "echo next"}) == Result("next\n")


def test_bash_times_out_kills_the_command_and_keeps_the_directory(box: Toolbox, tmp_path: Path) -> None:
    run(box, "bash", {"command": "mkdir -p w && cd w && export GONE=1"})
    began = time.monotonic()
    result = run(box, "bash", {"command": "echo started; sleep 30 & sleep 30"}, timeout_s=0.5)
    assert time.monotonic() - began < 5
    assert result.is_error
    assert result.text.startswith("started\n[timed out after 0.5 s: the command was stopped; the shell was restarted")
    assert run(box, "bash", {"command": 'pwd; echo "[$GONE]"'}) == Result(f"{tmp_path}/w\n[]\n")


def test_bash_restart_gives_a_fresh_shell(box: Toolbox, tmp_path: Path) -> None:
    run(box, "bash", {"command": "cd / && export X=1"})
    restarted = run(box, "bash", {"restart": True})
    assert not restarted.is_error and restarted.text.startswith("the shell was restarted")
    assert run(box, "bash", {"command": 'pwd; echo "[$X]"'}) == Result(f"{tmp_path}\n[]\n")


def test_bash_exit_ends_the_shell_and_the_next_command_gets_a_new_one(box: Toolbox, tmp_path: Path) -> None:
    result = run(box, "bash", {"command": "cd /; exit 4"})
    assert result.is_error and "the shell exited with code 4" in result.text
    assert run(box, "bash", {"command": "pwd"}) == Result(f"{tmp_path}\n")


def test_bash_output_is_capped_keeping_its_head_and_tail(box: Toolbox) -> None:
    result = run(box, "bash", {"command": "seq 1 100000"})
    assert not result.is_error
    assert result.text.startswith("1\n2\n3\n") and result.text.endswith("99999\n100000\n")
    assert "[output truncated:" in result.text and len(result.text.encode()) < 2200


def test_bash_needs_a_command_unless_restarting(box: Toolbox) -> None:
    assert run(box, "bash", {}) == Result("command must be a non-empty string (or set restart to true)", True)
    assert run(box, "bash", {"command": 5}).is_error


def test_an_unknown_tool_or_a_non_object_input_is_an_error(box: Toolbox) -> None:
    assert run(box, "nope", {}).text.startswith("unknown tool 'nope'")
    assert run(box, "read", ["x"]) == Result("the input of read must be an object", True)
