"""The exec agent, a standard-library Python package run inside every sandbox (see ``program``).

The sandbox-manager never imports it to run it: ``source()`` gives a small loader that carries the
modules of ``program`` (compressed), which becomes the container's command (``python3 -c <source>
<config>``), so nothing is copied into the read-only image and no host path is mounted.

In the container the loader installs an import hook for the package ``corral_agent`` (``program``
under another name, so nothing on the container's ``sys.path`` can shadow it), compiles each module
under its real path in this repository (``corral/sandbox_manager/agent/program/shell.py``, ...)
with its source in ``linecache`` (and tracebacks printed by ``traceback``, which reads it), so a
traceback names the file and shows the line, and runs ``corral_agent.main.main(sys.argv)``.

Linux caps one argument at 128 KiB (``MAX_ARG_STRLEN``); ``tests/unit/sandbox_manager`` checks the
loader stays well under it.
"""

from __future__ import annotations

import base64
import functools
import json
import zlib
from importlib import resources

#: The package name the modules get inside the container.
PACKAGE = "corral_agent"

_LOADER = """\
import base64, importlib.abc, importlib.util, json, linecache, sys, threading, traceback, zlib
MODULES = json.loads(zlib.decompress(base64.b64decode("{payload}")))
class Memory(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name not in MODULES:
            return None
        return importlib.util.spec_from_loader(name, self, is_package=MODULES[name][0])
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        is_package, filename, text = MODULES[module.__name__]
        module.__file__ = filename
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        exec(compile(text, filename, "exec"), module.__dict__)
    def get_source(self, name):
        return MODULES[name][2]
sys.meta_path.insert(0, Memory())
sys.excepthook = traceback.print_exception
threading.excepthook = lambda e: traceback.print_exception(e.exc_type, e.exc_value, e.exc_traceback)
import {package}.main
{package}.main.main(sys.argv)
"""


def modules() -> dict[str, tuple[bool, str, str]]:
    """``program``'s modules as ``{name: (is_package, file name, source)}``, named under ``PACKAGE``."""
    folder = resources.files(__package__).joinpath("program")
    prefix = __package__.replace(".", "/") + "/program/"
    found: dict[str, tuple[bool, str, str]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".py"):
            continue
        stem = entry.name.removesuffix(".py")
        name = PACKAGE if stem == "__init__" else f"{PACKAGE}.{stem}"
        found[name] = (stem == "__init__", prefix + entry.name, entry.read_text(encoding="utf-8"))
    return found


@functools.cache
def source() -> str:
    """The ``python3 -c`` argument that runs the exec agent (one argument; see the module docstring)."""
    packed = zlib.compress(json.dumps(modules(), separators=(",", ":")).encode("utf-8"), 9)
    return _LOADER.format(payload=base64.b64encode(packed).decode("ascii"), package=PACKAGE)
