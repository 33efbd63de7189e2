"""An environment's ``packages``: which entries are accepted, and the build script that installs them."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from corral.sandbox_manager.packages import (
    MANAGERS,
    InvalidPackages,
    Packages,
    build_script,
    install_step,
    read_packages,
)


def packages(**lists: list[str]) -> Packages:
    return read_packages({"packages": {"type": "packages", **lists}})


def test_no_packages_absent_null_or_empty_lists_are_all_no_packages() -> None:
    configs: list[dict[str, Any]] = [{}, {"packages": None}, {"packages": {"type": "packages", "apt": [], "pip": None}}]
    for config in configs:
        assert not read_packages(config)
        assert read_packages(config).lists == ()


def test_lists_come_in_the_install_order_with_entries_as_given() -> None:
    read = packages(pip=["b==1", "a"], apt=["jq", "curl"], go=["example.com/x@v1"], cargo=[])
    assert read.lists == (("apt", ("jq", "curl")), ("pip", ("b==1", "a")), ("go", ("example.com/x@v1",)))
    assert MANAGERS == ("apt", "pip", "npm", "cargo", "gem", "go")


@pytest.mark.parametrize(
    "entry",
    [
        "jq",
        "jq=1.6-2.1",
        "libc6:amd64",
        "pandas==2.2.0",
        "requests[socks]>=2,<3",
        "numpy==2.*",
        "pkg~=1.4",
        "pkg!=1.5",
        "@types/node@20.1.0",
        "left-pad@^1.3.0",
        "ripgrep@14.1.0",
        "rails:7.1.0",
        "golang.org/x/tools/gopls@latest",
    ],
)
def test_entries_with_version_extras_and_scope_punctuation_are_accepted(entry: str) -> None:
    assert packages(pip=[entry]).lists == (("pip", (entry,)),)


@pytest.mark.parametrize(
    "entry",
    [
        "jq; rm -rf /",
        "-oops",
        "--index-url=http://evil",
        "$(x)",
        "`x`",
        "a b",
        "x|y",
        "x&y",
        "x\ny",
        "jq\n",
        "'quoted'",
        'say"hi"',
        "a\\b",
        "{a,b}",
        "#comment",
        "./local/path",
        "",
        "x" * 257,
    ],
)
def test_entries_that_are_not_package_names_are_refused_naming_the_manager_and_the_entry(entry: str) -> None:
    with pytest.raises(InvalidPackages) as refused:
        packages(apt=["jq"], npm=[entry])
    message = str(refused.value)
    assert message.startswith(
        "this environment's packages could not be installed, so no sandbox was started: the npm list is refused: "
    )
    if entry and len(entry) < 257:
        assert repr(entry) in message
    assert refused.value.error_type == "invalid_request_error"
    assert refused.value.error_code == "invalid_packages"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"conda": ["numpy"]}, "unknown package manager 'conda'"),
        ({"pip": "numpy"}, "packages.pip must be a list"),
        ({"pip": [3]}, "packages.pip[0] must be a string"),
    ],
)
def test_malformed_package_lists_are_refused(raw: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidPackages, match=says.replace("[", r"\[").replace("]", r"\]")):
        read_packages({"packages": raw})


def test_the_canonical_form_sorts_managers_and_keeps_each_lists_order() -> None:
    one = packages(pip=["b", "a"], apt=["jq"])
    assert one.canonical() == '{"apt":["jq"],"pip":["b","a"]}'
    assert one.canonical() == packages(apt=["jq"], pip=["b", "a"], npm=[]).canonical()


def test_the_build_script_runs_one_announced_step_per_manager_in_order() -> None:
    script = build_script(packages(pip=["six==1.16.0"], apt=["jq"]))
    assert script.steps == ("installing the apt packages (jq)", "installing the pip packages (six==1.16.0)")
    lines = script.text.splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == [
        "printf '%s\\n' 'corral-build: step 1/2: installing the apt packages (jq)'",
        f"( {install_step('apt', ('jq',))} )",
        "printf '%s\\n' 'corral-build: step 2/2: installing the pip packages (six==1.16.0)'",
        f"( {install_step('pip', ('six==1.16.0',))} )",
    ]


def test_with_trusted_certificates_they_are_added_to_the_trust_store_before_any_install() -> None:
    script = build_script(packages(apt=["jq"]), trusted_ca=True)
    assert script.steps == ("adding the trusted CA certificates", "installing the apt packages (jq)")
    assert script.text.splitlines()[2] == "( update-ca-certificates )"


def test_a_line_announcing_a_step_names_it_and_other_lines_do_not() -> None:
    script = build_script(packages(apt=["jq"], pip=["six"]), trusted_ca=True)
    assert script.step_of("corral-build: step 3/3: installing the pip packages (six)") == 2
    assert script.step_of("corral-build: step 1/3: anything") == 0
    for other in (
        "Step 3/3 : RUN x",
        "corral-build: step 4/3: x",
        "corral-build: step 1/2: x",
        " corral-build: step 1/3: x",
    ):
        assert script.step_of(other) is None


def test_the_script_stops_at_the_first_failing_step_with_its_exit_code(tmp_path: Path) -> None:
    """Run as the build container runs it (``bash -euo pipefail -c``), with the steps replaced by
    commands that need no package manager."""
    script = build_script(packages(apt=["jq"], pip=["six"], npm=["left-pad"]))
    text = script.text
    for manager, names in packages(apt=["jq"], pip=["six"], npm=["left-pad"]).lists:
        command = {"apt": "echo apt ran", "pip": "exit 7", "npm": "echo npm ran"}[manager]
        text = text.replace(install_step(manager, names), command)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 7
    assert done.stdout.splitlines() == [
        "corral-build: step 1/3: installing the apt packages (jq)",
        "apt ran",
        "corral-build: step 2/3: installing the pip packages (six)",
    ]


def test_apt_updates_installs_without_recommends_and_cleans_the_lists() -> None:
    assert install_step("apt", ("jq", "curl=7.88.1-10")) == (
        "set -eu; apt-get update; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        "jq curl=7.88.1-10; apt-get clean; rm -rf /var/lib/apt/lists/*"
    )


def test_pip_installs_pip_with_apt_only_when_it_is_missing() -> None:
    step = install_step("pip", ("pandas==2.2.0", "requests[socks]>=2"))
    assert step.startswith("set -eu; if ! python3 -m pip --version >/dev/null 2>&1; then apt-get update; ")
    assert "--no-install-recommends python3-pip; apt-get clean" in step
    assert step.endswith(
        "python3 -m pip install --no-cache-dir --break-system-packages pandas==2.2.0 'requests[socks]>=2'"
    )


@pytest.mark.parametrize(
    ("manager", "tool", "apt", "install"),
    [
        ("npm", "npm", "nodejs npm", "npm install -g --no-audit --no-fund left-pad@1.3.0"),
        ("cargo", "cargo", "cargo", "cargo install --root /usr/local left-pad@1.3.0"),
        ("gem", "gem", "ruby", "gem install --no-document left-pad@1.3.0"),
        ("go", "go", "golang", "GOCACHE=/tmp/corral-go-cache go install left-pad@1.3.0"),
    ],
)
def test_other_managers_are_installed_with_apt_when_missing_then_install_the_entries(
    manager: str, tool: str, apt: str, install: str
) -> None:
    step = install_step(manager, ("left-pad@1.3.0",))
    assert step.startswith(f"set -eu; if ! command -v {tool} >/dev/null 2>&1; then apt-get update; ")
    assert f"--no-install-recommends {apt}; apt-get clean" in step
    assert install in step


def test_go_entries_without_a_version_get_the_latest() -> None:
    step = install_step("go", ("golang.org/x/tools/gopls", "example.com/y@v1.2.0"))
    assert "go install golang.org/x/tools/gopls@latest example.com/y@v1.2.0;" in step
    assert "GOBIN=/usr/local/bin" in step


def test_every_entry_is_one_quoted_shell_word() -> None:
    names = ("requests[socks]>=2,<3", "numpy==2.*", "left-pad@^1.3.0")
    step = install_step("pip", names)
    words = shlex.split(step.rsplit("--break-system-packages ", 1)[1])
    assert tuple(words) == names
