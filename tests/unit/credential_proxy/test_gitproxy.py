"""The git proxy's pure parts: which requests it takes, the hosts it reaches, how a host's answer
maps to the API's repository errors."""

from __future__ import annotations

from typing import Any, cast

import pytest

from corral.contracts.api.errors import ApiError
from corral.contracts.repositories import RepositoryCheckout
from corral.credential_proxy.gitproxy import is_git_request
from corral.credential_proxy.http_head import parse_head
from corral.credential_proxy.interfaces import OwnAddresses
from corral.credential_proxy.repositories import Repositories, Upstream, _judge, _refs_in, authorization
from corral.credential_proxy.settings import EgressSettings, GitSettings


def head(target: str) -> Any:
    return parse_head(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def test_only_the_git_host_is_taken_by_the_git_proxy() -> None:
    assert is_git_request(head("http://git.corral.invalid/sesrsc_1/info/refs?service=git-upload-pack"))
    assert is_git_request(head("http://GIT.corral.invalid:80/sesrsc_1/git-receive-pack"))
    assert not is_git_request(head("http://git.corral.invalid.example.com/x"))
    assert not is_git_request(head("http://example.com/git.corral.invalid/"))


def repositories(*hosts: str) -> Repositories:
    return Repositories(
        cast(Any, None),
        GitSettings(hosts=hosts),
        EgressSettings(),
        resolve=cast(Any, None),
        own_addresses=OwnAddresses(lambda: frozenset()).current,
    )


def test_a_repository_must_live_on_an_allowed_host() -> None:
    repos = repositories("github.com", "git.example.com:8443")
    assert repos.upstream("https://github.com/o/r.git") == Upstream("https", "github.com", 443, "/o/r.git")
    assert repos.upstream("https://git.example.com:8443/o/r").authority == "git.example.com:8443"
    for url in ("https://gitlab.com/o/r", "https://git.example.com/o/r", "https://github.com:444/o/r"):
        with pytest.raises(ApiError) as caught:
            repos.upstream(url)
        assert caught.value.error_code == "repository_host_not_allowed", url


def test_the_token_goes_upstream_as_basic_credentials() -> None:
    assert authorization(None) == []
    assert authorization("t0k") == [("Authorization", "Basic eC1hY2Nlc3MtdG9rZW46dDBr")]


def pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


ADVERTISEMENT = (
    pkt(b"# service=git-upload-pack\n")
    + b"0000"
    + pkt(b"a" * 40 + b" HEAD\0multi_ack symref=HEAD:refs/heads/main\n")
    + pkt(b"a" * 40 + b" refs/heads/main\n")
    + b"0000"
)


def test_a_hosts_answer_maps_to_the_apis_repository_errors() -> None:
    where = Upstream("https", "github.com", 443, "/o/r")
    assert _refs_in(ADVERTISEMENT) == {"HEAD", "refs/heads/main"}
    kinds = {
        status: problem.type if (problem := _judge(status, None, where, None, has_token=True)) else None
        for status in (401, 403, 404, 500)
    }
    assert kinds == {
        401: "repository_authentication_error",
        403: "repository_forbidden_error",
        404: "repository_not_found_error",
        500: "repository_clone_error",
    }
    assert _judge(200, ADVERTISEMENT, where, RepositoryCheckout(type="branch", name="main"), has_token=True) is None
    missing = _judge(200, ADVERTISEMENT, where, RepositoryCheckout(type="branch", name="dev"), has_token=True)
    assert missing is not None and missing.type == "repository_checkout_error"
