"""An environment's ``packages``: read from its config, checked entry by entry, and the build script
that installs them.

Managers are installed in a fixed order, one step each: apt, pip, npm, cargo, gem, go. Each step
first installs its package manager with apt when the image lacks it (``python3-pip``, ``nodejs
npm``, ``cargo``, ``ruby``, ``golang``), then the entries, as root (the image still ends as ``USER
sandbox`` in ``/workspace`` like its base: ``images`` commits it so). Every entry must match
``corral.contracts.api.environments.PACKAGE_SPEC_PATTERN`` (no whitespace, no shell characters, no
leading ``-``) and is shell-quoted too, so an entry can only ever be an argument of its manager.
Extra CA certificates (``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``) are added to the image's trust store
before the first install, for package registries reached through a TLS-intercepting proxy.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from corral.contracts.api.environments import package_spec_problem
from corral.contracts.api.errors import ErrorType

#: The package managers, in the order their steps run.
MANAGERS: Final = ("apt", "pip", "npm", "cargo", "gem", "go")

_APT_INSTALL: Final = "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends"
_APT_CLEAN: Final = "apt-get clean; rm -rf /var/lib/apt/lists/*"
#: Where the extra CA certificates are put in the build container (``build_script(trusted_ca=True)``).
TRUSTED_CA_PATH: Final = "/usr/local/share/ca-certificates/corral-trusted-ca.crt"


class PackagesNotInstalled(Exception):
    """The environment's packages could not be installed, so its session has no sandbox.

    ``str()`` is a sentence for the model (it becomes the tool call's error result); ``reason`` is
    the part after "could not be installed: ".
    """

    error_type: ClassVar[ErrorType] = "api_error"
    error_code: ClassVar[str] = "packages_not_installed"

    def __init__(self, reason: str) -> None:
        super().__init__(f"this environment's packages could not be installed, so no sandbox was started: {reason}")
        self.reason = reason


class InvalidPackages(PackagesNotInstalled):
    """The environment's ``packages`` cannot be installed as written; the message names the entry."""

    error_type: ClassVar[ErrorType] = "invalid_request_error"
    error_code: ClassVar[str] = "invalid_packages"


@dataclass(frozen=True)
class Packages:
    """The non-empty package lists of an environment, in ``MANAGERS`` order, entries as given."""

    lists: tuple[tuple[str, tuple[str, ...]], ...]

    def __bool__(self) -> bool:
        return bool(self.lists)

    def canonical(self) -> str:
        """JSON with the managers sorted and each manager's entries in the order given."""
        lists = {manager: list(names) for manager, names in self.lists}
        return json.dumps(lists, sort_keys=True, separators=(",", ":"))

    def summary(self, limit: int = 10) -> str:
        """``apt: jq; pip: six==1.16.0``, at most ``limit`` entries."""
        entries = [f"{manager}:{name}" for manager, names in self.lists for name in names]
        shown = ", ".join(entries[:limit])
        return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


NO_PACKAGES: Final = Packages(lists=())


def read_packages(config: Mapping[str, Any]) -> Packages:
    """The ``packages`` of an environment ``config`` (absent, null or all-empty: none).

    Raises:
        InvalidPackages: an unknown manager, a list that is not a list of strings, or an entry that
            is not a package name (the message names the manager and the entry).
    """
    raw = config.get("packages")
    if raw is None:
        return NO_PACKAGES
    if not isinstance(raw, Mapping):
        raise InvalidPackages("packages must be an object with lists per package manager (apt, pip, ...)")
    unknown = sorted(str(key) for key in raw if key not in MANAGERS and key != "type")
    if unknown:
        raise InvalidPackages(
            f"packages names an unknown package manager {unknown[0]!r}; the managers are {', '.join(MANAGERS)}"
        )
    lists: list[tuple[str, tuple[str, ...]]] = []
    for manager in MANAGERS:
        names = raw.get(manager)
        if names is None:
            continue
        if not isinstance(names, list):
            raise InvalidPackages(f"packages.{manager} must be a list of package names")
        for index, name in enumerate(names):
            if not isinstance(name, str):
                raise InvalidPackages(f"packages.{manager}[{index}] must be a string, not {type(name).__name__}")
            problem = package_spec_problem(name)
            if problem is not None:
                raise InvalidPackages(f"the {manager} list is refused: {problem}. Update the environment's packages")
        if names:
            lists.append((manager, tuple(names)))
    return Packages(lists=tuple(lists))


def _apt(names: str) -> str:
    return f"apt-get update; {_APT_INSTALL} {names}; {_APT_CLEAN}"


def _unless(command: str, then_apt: str) -> str:
    """Install ``then_apt`` with apt unless ``command`` is already on the image."""
    return f"if ! command -v {command} >/dev/null 2>&1; then {_apt(then_apt)}; fi"


def install_step(manager: str, names: tuple[str, ...]) -> str:
    """The shell command that installs ``names`` with ``manager`` (run as root, ``sh -c``).

    Raises:
        ValueError: ``manager`` is not one of ``MANAGERS``.
    """
    args = " ".join(shlex.quote(name) for name in names)
    if manager == "apt":
        return f"set -eu; {_apt(args)}"
    if manager == "pip":
        return (
            "set -eu; if ! python3 -m pip --version >/dev/null 2>&1; then "
            f"{_apt('python3-pip')}; fi; PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 "
            f"python3 -m pip install --no-cache-dir --break-system-packages {args}"
        )
    if manager == "npm":
        return (
            f"set -eu; {_unless('npm', 'nodejs npm')}; NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt "
            f"npm install -g --no-audit --no-fund {args}; "
            "npm cache clean --force; rm -rf /root/.npm"
        )
    if manager == "cargo":
        return f"set -eu; {_unless('cargo', 'cargo')}; cargo install --root /usr/local {args}; rm -rf /root/.cargo"
    if manager == "gem":
        return f"set -eu; {_unless('gem', 'ruby')}; gem install --no-document {args}"
    if manager == "go":
        # `go install` outside a module needs a version; a bare path means the latest one.
        versioned = " ".join(shlex.quote(name if "@" in name else f"{name}@latest") for name in names)
        return (
            f"set -eu; {_unless('go', 'golang')}; GOBIN=/usr/local/bin GOPATH=/tmp/corral-go "
            f"GOCACHE=/tmp/corral-go-cache go install {versioned}; rm -rf /tmp/corral-go /tmp/corral-go-cache"
        )
    raise ValueError(f"unknown package manager {manager!r}")


#: How the build script announces each step on its output: ``corral-build: step 2/3: installing ...``.
STEP_MARKER: Final = "corral-build: step "
_STEP_LINE: Final = re.compile(r"^corral-build: step (\d+)/(\d+): ")


@dataclass(frozen=True)
class BuildScript:
    """The install steps of an environment image, as one bash script run as root in the build container."""

    text: str
    #: What each step does, in words, in the order they run (``installing the apt packages (jq)``).
    steps: tuple[str, ...]

    def step_of(self, line: str) -> int | None:
        """The index in ``steps`` of the step that ``line`` (a line of output) announces, if it is one."""
        found = _STEP_LINE.match(line)
        if found is None or int(found.group(2)) != len(self.steps):
            return None
        index = int(found.group(1)) - 1
        return index if 0 <= index < len(self.steps) else None


def build_script(packages: Packages, *, trusted_ca: bool = False) -> BuildScript:
    """The script that installs ``packages`` as root, one step per manager in ``MANAGERS`` order.

    It is run with ``bash -euo pipefail -c`` (``agent/program/build.py``), so the first step that fails ends
    it with that step's exit code. Each step first prints its ``STEP_MARKER`` line, then runs in a
    subshell of its own. With ``trusted_ca`` the certificates the manager put at ``TRUSTED_CA_PATH``
    are added to the trust store before anything is installed (for a TLS-intercepting proxy between
    the egress proxy and the package registries).
    """
    steps: list[tuple[str, str]] = []
    if trusted_ca:
        steps.append(("adding the trusted CA certificates", "update-ca-certificates"))
    for manager, names in packages.lists:
        steps.append((f"installing the {manager} packages ({', '.join(names)})", install_step(manager, names)))
    lines = ["# A Corral environment image build (generated): the sandbox image's install steps, as root."]
    for number, (what, command) in enumerate(steps, start=1):
        lines.append(f"printf '%s\\n' {shlex.quote(f'{STEP_MARKER}{number}/{len(steps)}: {what}')}")
        lines.append(f"( {command} )")
    return BuildScript(text="\n".join(lines) + "\n", steps=tuple(what for what, _ in steps))
