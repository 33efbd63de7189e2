"""How the sandbox-manager clones a session's repository: through the proxy, with no secret."""

from __future__ import annotations

from corral.contracts.egress import EgressPolicy
from corral.contracts.repositories import RepositoryCheckout, RepositoryMount
from corral.sandbox_manager.repositories import clone_script, with_repositories

MOUNT = RepositoryMount(
    resource_id="sesrsc_01ABC",
    url="https://github.com/o/r",
    mount_path="/workspace/r",
    checkout=RepositoryCheckout(type="branch", name="feature/x; rm -rf /"),
)


def test_the_clone_goes_through_the_proxy_from_the_capability_url() -> None:
    script = clone_script(MOUNT)
    assert "http://git.corral.invalid/sesrsc_01ABC" in script
    assert "github.com" not in script, "the sandbox never learns the upstream from its remote"
    assert "git config http.proxy http://127.0.0.1:3128" in script
    assert "--branch 'feature/x; rm -rf /'" in script


def test_repositories_give_a_sandbox_egress_even_without_network() -> None:
    policy = with_repositories(None, [MOUNT])
    assert policy is not None and policy.allowed_hosts == [] and not policy.allow_package_managers
    assert [r.resource_id for r in policy.repositories] == ["sesrsc_01ABC"]
    open_policy = with_repositories(EgressPolicy(allowed_hosts=None), [MOUNT])
    assert open_policy is not None and open_policy.allowed_hosts is None
    assert with_repositories(None, []) is None
