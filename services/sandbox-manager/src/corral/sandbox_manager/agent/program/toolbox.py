"""The built-in tools by name: checks each input is an object and turns failures into error results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import files, search
from .cancellation import Call
from .protocol import Config, Result, ToolError
from .shell import Shell
from .text import cap, clean


class Toolbox:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.root
        self.shell = Shell(config.root, config.output_limit)

    def run(self, tool: str, args: object, call: Call) -> Result:
        root, limit = self.root, self.config.output_limit
        handlers: dict[str, Callable[[dict[str, Any], Call], Result]] = {
            "bash": self.bash,
            "read": lambda a, _call: files.read(a, root, limit),
            "write": lambda a, _call: files.write(a, root),
            "edit": lambda a, _call: files.edit(a, root),
            "glob": lambda a, c: search.glob(a, root, c),
            "grep": lambda a, c: search.grep(a, root, c),
        }
        handler = handlers.get(tool)
        if handler is None:
            return Result(f"unknown tool {tool!r}; this sandbox runs {', '.join(handlers)}", is_error=True)
        if not isinstance(args, dict):
            return Result(f"the input of {tool} must be an object", is_error=True)
        try:
            result = handler(args, call)
        except ToolError as exc:
            return Result(str(exc), is_error=True)
        except Exception as exc:
            return Result(f"{tool} failed: {type(exc).__name__}: {exc}", is_error=True)
        return Result(cap(clean(result.text), limit + 200), result.is_error)

    def bash(self, args: dict[str, Any], call: Call) -> Result:
        restart = args.get("restart")
        command = args.get("command")
        if restart not in (None, True, False):
            raise ToolError("restart must be a boolean")
        if restart:
            result = self.shell.restart()
            if command:
                return Result(result.text + "\n" + self.shell.run(str(command), call).text)
            return result
        if not isinstance(command, str) or not command.strip():
            raise ToolError("command must be a non-empty string (or set restart to true)")
        return self.shell.run(command, call)
