"""Pure decisions of the sandbox-manager: which container an environment gets, and how a tool call
is dispatched (answered here, or run in the sandbox with which timeout)."""

from __future__ import annotations

from typing import Any

import pytest

from corral.contracts.egress import EgressPolicy
from corral.contracts.sandbox import Execute, execute_reply_timeout_s
from corral.sandbox_manager.environments import UnsupportedEnvironment, base_spec, place
from corral.sandbox_manager.settings import SandboxSettings
from corral.sandbox_manager.tools import LocalAnswer, SandboxCall, plan

SETTINGS = SandboxSettings(image="img:1", tool_timeout_ms=120_000, tool_timeout_max_ms=600_000)


def execute(name: str, args: dict[str, Any], timeout_ms: int | None = None) -> Execute:
    return Execute(session_id="s", tool_use_id="t", name=name, input=args, environment_id="e", timeout_ms=timeout_ms)


def test_the_default_environment_may_reach_any_public_host_through_its_egress_proxy() -> None:
    placement = place(SETTINGS, {})
    assert placement.spec.network == "egress" and placement.notices == ()
    assert placement.egress == EgressPolicy(allowed_hosts=None, allow_package_managers=True)
    assert placement.spec.hash != base_spec(SETTINGS).hash  # never a network-none sandbox
    assert place(SETTINGS, {"type": "cloud", "networking": {"type": "unrestricted"}}) == placement


def test_limited_networking_allows_its_hosts_and_packages_get_their_image() -> None:
    config = {
        "type": "cloud",
        "networking": {"type": "limited", "allowed_hosts": ["pypi.org"], "allow_package_managers": False},
        "packages": {"type": "packages", "pip": ["pandas==2.2.0"], "apt": []},
    }
    placement = place(SETTINGS, config)
    assert placement.spec.network == "egress"
    assert placement.egress == EgressPolicy(allowed_hosts=["pypi.org"], allow_package_managers=False)
    assert placement.image is not None and placement.spec.image == placement.image.tag


@pytest.mark.parametrize(
    "networking",
    [{"type": "limited"}, {"type": "limited", "allowed_hosts": [], "allow_package_managers": False}],
)
def test_limited_networking_that_allows_nothing_gets_no_network_at_all(networking: dict[str, Any]) -> None:
    placement = place(SETTINGS, {"type": "cloud", "networking": networking})
    assert placement.spec == base_spec(SETTINGS) and placement.spec.network == "none"
    assert placement.egress is None


def test_package_managers_alone_are_a_policy_of_their_own() -> None:
    networking = {"type": "limited", "allowed_hosts": [], "allow_package_managers": True}
    placement = place(SETTINGS, {"type": "cloud", "networking": networking})
    assert placement.egress == EgressPolicy(allowed_hosts=[], allow_package_managers=True)


def test_a_self_hosted_environment_does_not_run_tools_here() -> None:
    with pytest.raises(UnsupportedEnvironment):
        place(SETTINGS, {"type": "self_hosted"})


@pytest.mark.parametrize("name", ["web_fetch", "web_search"])
def test_web_tools_are_answered_as_unavailable(name: str) -> None:
    step = plan(execute(name, {"url": "https://example.com"}), SETTINGS)
    assert isinstance(step, LocalAnswer) and step.is_error
    assert step.text.startswith(f"{name} is not available in this deployment")


def test_an_unknown_tool_is_answered_with_the_toolset() -> None:
    step = plan(execute("rm_rf", {}), SETTINGS)
    assert isinstance(step, LocalAnswer) and "bash, edit, read, write, glob, grep, web_fetch, web_search" in step.text


def test_bash_timeout_comes_from_its_input_then_the_request_then_the_default_capped_at_the_max() -> None:
    assert plan(execute("bash", {"command": "x", "timeout_ms": 5000}, 9000), SETTINGS) == SandboxCall(
        "bash", {"command": "x"}, 5000
    )
    assert plan(execute("bash", {"command": "x"}, 9000), SETTINGS) == SandboxCall("bash", {"command": "x"}, 9000)
    assert plan(execute("bash", {"command": "x", "timeout_ms": 0}), SETTINGS) == SandboxCall(
        "bash", {"command": "x"}, 120_000
    )
    assert plan(execute("read", {"file_path": "a"}, 10**9), SETTINGS) == SandboxCall(
        "read", {"file_path": "a"}, 600_000
    )
    bad = plan(execute("bash", {"command": "x", "timeout_ms": "soon"}), SETTINGS)
    assert isinstance(bad, LocalAnswer) and "timeout_ms" in bad.text


def test_a_caller_waits_for_the_tool_timeout_plus_a_margin() -> None:
    assert execute_reply_timeout_s(5000) == 35.0
    assert execute_reply_timeout_s(None) == 630.0


@pytest.mark.parametrize("user", ["0:0", "1000:0", "0", "root", "sandbox:sandbox"])
def test_sandboxes_never_run_as_root_or_a_named_user(user: str) -> None:
    with pytest.raises(ValueError):
        SandboxSettings(user=user)
