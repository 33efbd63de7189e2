"""The exec agent's loader: one ``python3 -c`` argument that carries every module of the agent
package, stays well under Linux's single-argument limit, cannot be shadowed by files in the
workspace, and keeps tracebacks pointing at the real module files."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

from corral.sandbox_manager.agent import PACKAGE, modules, source

#: Linux's MAX_ARG_STRLEN: no single argv string may be longer (32 pages of 4 KiB).
LINUX_SINGLE_ARGUMENT_LIMIT = 128 * 1024


def test_the_argument_stays_well_under_the_linux_single_argument_limit() -> None:
    size = len(source().encode("utf-8"))
    assert size < LINUX_SINGLE_ARGUMENT_LIMIT // 2, (
        f"the exec agent's python3 -c argument is {size} bytes; keep it under half of Linux's "
        f"{LINUX_SINGLE_ARGUMENT_LIMIT}-byte single-argument limit (trim the agent or ship it differently)"
    )


def test_every_module_of_the_package_is_carried() -> None:
    folder = resources.files("corral.sandbox_manager.agent").joinpath("program")
    files = sorted(e.name for e in folder.iterdir() if e.name.endswith(".py"))
    carried = modules()
    assert len(files) > 10
    assert sorted(path.rsplit("/", 1)[1] for _, path, _ in carried.values()) == files
    assert carried[PACKAGE][0] is True
    assert carried[f"{PACKAGE}.main"][1] == "corral/sandbox_manager/agent/program/main.py"


def test_the_agent_imports_only_the_standard_library() -> None:
    for name, (_, path, text) in modules().items():
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root == "__future__", f"{name} imports {root}"


def test_a_traceback_names_the_real_module_file_and_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", source(), "this is not json"], capture_output=True, cwd=tmp_path, timeout=30
    )
    assert proc.returncode != 0
    stderr = proc.stderr.decode()
    assert 'File "corral/sandbox_manager/agent/program/main.py"' in stderr, stderr
    assert "json.loads(argv[1])" in stderr, stderr


def test_files_in_the_working_directory_cannot_shadow_the_agent(tmp_path: Path) -> None:
    shadow = tmp_path / PACKAGE
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('the shadowing package was imported')\n")
    (shadow / "main.py").write_text("raise SystemExit('the shadowing main was imported')\n")
    config = json.dumps({"root": str(tmp_path / "root")})
    proc = subprocess.run(
        [sys.executable, "-c", source(), config],
        input=b'{"id": 1, "tool": "ping"}\n',
        capture_output=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert proc.stderr == b""
    assert json.loads(proc.stdout.splitlines()[0])["content"] == [{"type": "text", "text": "pong"}]
