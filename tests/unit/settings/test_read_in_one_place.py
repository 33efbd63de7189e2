"""Every Corral setting is read in one place: a service's through its settings classes (the fragments
in ``corral.settings``), the launcher's in ``corral.devstack.configuration``. No other module under
libs/ or services/ reads a ``CORRAL_`` variable from the environment, and no other devstack module
reads the environment at all (it is given the typed configuration instead).

Exempt: the sandbox exec agent program, which runs inside a sandbox container (not a service setting).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

#: Where reading settings from the environment is the point.
ALLOWED = ("libs/settings/", "libs/devstack/src/corral/devstack/configuration.py")
#: Runs inside the sandbox container, from its own environment.
EXEMPT = ("services/sandbox-manager/src/corral/sandbox_manager/agent/",)
#: The launcher: only configuration.py may look at the environment, for anything.
LAUNCHER = "libs/devstack/"


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "CORRAL_..."`` constants."""
    found: dict[str, str] = {}
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[target.id] = value.value
    return found


def _is_environ(node: ast.expr) -> bool:
    """``os.environ``, or a mapping named for it (``environ``, ``env``) passed around instead."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" or (isinstance(node.value, ast.Name) and node.attr == "environ")
    return isinstance(node, ast.Name) and node.id in ("environ", "env")


def _is_os_environ(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
        return node.attr in ("environ", "getenv", "environb", "getenvb")
    return False


def problems(path: Path, launcher: bool) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = _constants(tree)

    def corral_name(node: ast.expr) -> str | None:
        value = node.value if isinstance(node, ast.Constant) else constants.get(getattr(node, "id", ""), None)
        return value if isinstance(value, str) and value.startswith("CORRAL_") else None

    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{getattr(node, 'lineno', 0)}"
        if launcher and isinstance(node, ast.Attribute) and _is_os_environ(node):
            yield f"{where}: reads the environment (only configuration.py does)"
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in ("environ", "getenv"):
                    yield f"{where}: imports os.{alias.name}"
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            reader = (
                isinstance(func, ast.Attribute)
                and func.attr in ("get", "pop", "setdefault")
                and (_is_environ(func.value) or _is_os_environ(func.value))
            ) or _is_os_environ(func)
            name = corral_name(node.args[0])
            if reader and name:
                yield f"{where}: reads {name}"
        if isinstance(node, ast.Subscript) and (_is_environ(node.value) or _is_os_environ(node.value)):
            name = corral_name(node.slice)
            if name and isinstance(node.ctx, ast.Load):
                yield f"{where}: reads {name}"
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
            name = corral_name(node.left)
            if name and any(_is_environ(c) or _is_os_environ(c) for c in node.comparators):
                yield f"{where}: looks for {name}"


def modules(root: Path) -> Iterator[tuple[Path, bool]]:
    for top in ("libs", "services"):
        for path in sorted((root / top).glob("*/src/**/*.py")):
            relative = path.relative_to(root).as_posix()
            if relative.startswith(ALLOWED) or relative.startswith(EXEMPT):
                continue
            yield path, relative.startswith(LAUNCHER)


def test_no_module_reads_a_corral_variable_outside_the_settings_and_the_launchers_configuration() -> None:
    found = [problem for path, launcher in modules(ROOT) for problem in problems(path, launcher)]
    assert found == [], "\n".join(found)


def test_the_scan_sees_each_way_of_reading_a_variable(tmp_path: Path) -> None:
    ways = {
        "a.py": 'import os\nos.environ.get("CORRAL_X")\n',
        "b.py": 'import os\nos.getenv("CORRAL_X")\n',
        "c.py": 'import os\nos.environ["CORRAL_X"]\n',
        "d.py": 'import os\nVAR = "CORRAL_X"\nif VAR in os.environ: pass\n',
        "e.py": 'def f(environ):\n    return environ.get("CORRAL_X")\n',
        "f.py": "from os import environ\n",
    }
    for name, source in ways.items():
        path = tmp_path / name
        path.write_text(source)
        assert list(problems(path, launcher=False)), name


def test_the_launcher_reads_no_environment_outside_its_configuration(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text('import os\nenv = dict(os.environ)\nos.environ.get("PATH")\n')
    assert len(list(problems(path, launcher=True))) == 2
