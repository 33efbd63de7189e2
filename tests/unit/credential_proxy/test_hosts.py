"""The egress rules without I/O: allow-list matching, the allowed_hosts syntax, address classification."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from corral.contracts.egress import (
    EGRESS_SOCKET_NAME,
    SANDBOX_EGRESS_DIR,
    SANDBOX_PROXY_PORT,
    EgressOpened,
    EgressPolicy,
    OpenEgress,
    allowed_host_problem,
)
from corral.credential_proxy.hosts import (
    OWN_ADDRESS,
    PACKAGE_MANAGER_HOSTS,
    BadHost,
    HostRules,
    address_problem,
    operator_allows,
    parse_host,
)


def rules(*hosts: str, package_managers: bool = False) -> HostRules:
    return HostRules.from_policy(EgressPolicy(allowed_hosts=list(hosts), allow_package_managers=package_managers))


def allows(host_rules: HostRules, host: str) -> bool:
    return host_rules.allows(parse_host(host))


# --- host rules ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "host", "allowed"),
    [
        ("example.com", "example.com", True),
        ("example.com", "EXAMPLE.com", True),
        ("example.com", "example.com.", True),
        ("Example.COM.", "example.com", True),
        ("example.com", "www.example.com", False),
        ("example.com", "example.com.evil.test", False),
        ("example.com", "notexample.com", False),
        ("*.example.com", "www.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "WWW.Example.Com.", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "evilexample.com", False),
        (".example.com", "api.example.com", True),
        (".example.com", "example.com", False),
        ("203.0.113.7", "203.0.113.7", True),
        ("203.0.113.7", "203.0.113.8", False),
        ("::ffff:203.0.113.7", "203.0.113.7", True),
        ("[2001:db8::7]", "[2001:db8::7]", True),
        ("2001:db8::7", "2001:db8:0::7", True),
        ("example.com", "93.184.215.14", False),
    ],
)
def test_an_allowed_hosts_entry_matches_exactly_what_it_names(entry: str, host: str, allowed: bool) -> None:
    assert allows(rules(entry), host) is allowed


def test_no_allowed_hosts_list_means_any_host() -> None:
    unrestricted = HostRules.from_policy(EgressPolicy(allowed_hosts=None))
    assert allows(unrestricted, "anything.example") and allows(unrestricted, "93.184.215.1")


def test_an_empty_list_allows_nothing() -> None:
    assert not allows(rules(), "pypi.org")


def test_package_managers_add_the_registries_and_nothing_else() -> None:
    with_registries = rules("example.com", package_managers=True)
    for host in PACKAGE_MANAGER_HOSTS:
        assert allows(with_registries, host), host
    assert allows(with_registries, "example.com")
    assert not allows(with_registries, "evil.pypi.org")
    assert not allows(rules("example.com"), "pypi.org")


# --- the allowed_hosts syntax (shared by the contract) ---------------------------------------------------
@pytest.mark.parametrize(
    "entry",
    ["example.com", "*.example.com", ".example.com", "a-b_c.example.com.", "xn--bcher-kva.de", "10.0.0.1", "[::1]"],
)
def test_these_allowed_hosts_entries_are_accepted(entry: str) -> None:
    assert allowed_host_problem(entry) is None


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("example.com:443", "port"),
        ("https://example.com", "without scheme"),
        ("example.com/path", "without scheme"),
        ("user@example.com", "without scheme"),
        ("*", "not a host name"),
        ("*.*.example.com", "not a host name"),
        ("bücher.de", "punycode"),
        ("1.2.3", "not a number"),
        ("0x7f.1", "not a number"),
        ("", "1 to"),
    ],
)
def test_these_allowed_hosts_entries_are_refused_with_a_reason(entry: str, says: str) -> None:
    problem = allowed_host_problem(entry)
    assert problem is not None and says in problem


def test_the_open_request_rejects_a_bad_entry_a_session_id_that_is_no_directory_name_and_a_listen_host() -> None:
    with pytest.raises(ValidationError, match="names a port"):
        EgressPolicy(allowed_hosts=["example.com:443"])
    for bad in ("a.b", "..", "a/b", "", "s" * 129):
        with pytest.raises(ValidationError, match="session_id"):
            OpenEgress(session_id=bad, policy=EgressPolicy())
    with pytest.raises(ValidationError, match="listen_host"):  # the socket is the credential-proxy's choice
        OpenEgress.model_validate({"session_id": "s1", "listen_host": "127.0.0.1", "policy": {}})
    assert OpenEgress(session_id="sesn_01JD3ABCDEFGHJKMNPQRSTVWXY", policy=EgressPolicy()).policy == EgressPolicy()


def test_the_opened_reply_names_the_directory_and_the_socket() -> None:
    opened = EgressOpened(session_id="s1", directory="/run/corral-egress/s1", socket_name=EGRESS_SOCKET_NAME)
    assert opened.model_dump() == {
        "session_id": "s1",
        "directory": "/run/corral-egress/s1",
        "socket_name": "proxy.sock",
        "credential_environment": {},  # a session without environment_variable credentials
        "ca_certificate": None,
    }
    assert (SANDBOX_EGRESS_DIR, SANDBOX_PROXY_PORT) == ("/run/corral/egress", 3128)


# --- destination hosts -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Example.COM.", "example.com"),
        ("127.0.0.1", ipaddress.IPv4Address("127.0.0.1")),
        ("[::1]", ipaddress.IPv6Address("::1")),
        ("::ffff:10.0.0.1", ipaddress.IPv4Address("10.0.0.1")),
    ],
)
def test_a_destination_host_is_normalized(text: str, parsed: object) -> None:
    assert parse_host(text) == parsed


@pytest.mark.parametrize("text", ["", "exa mple.com", "2130706433", "0x7f000001", "127.1", "a..b", "-x.com-", "[::1"])
def test_a_destination_that_is_no_host_or_a_disguised_number_is_refused(text: str) -> None:
    with pytest.raises(BadHost):
        parse_host(text)


# --- address classification --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.100.100.200", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("0.1.2.3", "'this network'"),
        ("192.0.0.170", "protocol assignments"),
        ("198.18.0.1", "benchmarking"),
        ("198.19.255.1", "benchmarking"),
        ("fd00:ec2::254", "private"),
        ("fc00::1", "private"),
        ("2001::1", "Teredo"),
        ("100::1", "discard-only"),
        ("4000::1", "outside global unicast"),
        ("fec0::1", "site-local"),
        ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
        ("64:ff9b::a00:1", "private"),
        ("2002:7f00:1::1", "6to4 form of 127.0.0.1"),
        ("2002:a9fe:a9fe::1", "link-local"),
        ("::1.2.3.4", "outside global unicast"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("192.0.2.2", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.80", "documentation"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("192.88.99.1", "6to4 relay"),
        ("::ffff:192.0.2.2", "IPv4-mapped form of 192.0.2.2"),
        ("64:ff9b::c000:202", "NAT64 form of 192.0.2.2"),
        ("2002:c000:202::1", "6to4 form of 192.0.2.2"),
        ("64:ff9b::6440:1", "carrier-grade NAT"),
        ("2002:c612:1::1", "benchmarking"),
        ("::ffff:0:7f00:1", "outside global unicast"),  # IPv4-translated (RFC 2765)
        ("::7f00:1", "outside global unicast"),  # IPv4-compatible
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("5f00::1", "outside global unicast"),
    ],
)
def test_addresses_that_are_never_reached(address: str, reason: str) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None and reason in problem, problem


@pytest.mark.parametrize(
    "address",
    ["151.101.0.223", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1", "172.32.0.1", "2606:4700::1111",
     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2a04:4e42::223"],
)  # fmt: skip
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


#: This machine's interface addresses in the tests below: public ones too, which no range rule refuses.
OWN = frozenset(
    ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.2", "93.184.215.14", "fd00::2", "2a01:4f8::2")
)


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "::ffff:93.184.215.14", "64:ff9b::5db8:d70e", "2002:5db8:d70e::1", "2002:5db8:d70e:ff::9",
     "2a01:4f8::2", "192.0.2.2", "::ffff:192.0.2.2", "fd00::2", "127.0.0.1"],
)  # fmt: skip
def test_an_address_of_this_machine_is_refused_in_every_form_whatever_its_range(address: str) -> None:
    problem = address_problem(ipaddress.ip_address(address), OWN)
    assert problem is not None and OWN_ADDRESS in problem, problem


@pytest.mark.parametrize("address", ["93.184.215.14", "::ffff:93.184.215.14", "64:ff9b::5db8:d70e", "2a01:4f8::2"])
def test_the_same_public_addresses_pass_on_a_machine_that_does_not_have_them(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("203.0.113.80", True),
        ("::ffff:203.0.113.80", True),
        ("203.0.113.81", False),
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("64:ff9b::cb00:7150", False),  # embedded forms are not matched: list them as such
        ("2002:cb00:7150::1", False),
    ],
)
def test_the_operators_allow_list_matches_addresses_and_networks(address: str, allowed: bool) -> None:
    networks = (
        ipaddress.IPv4Network("203.0.113.80/32"),
        ipaddress.IPv6Network("2001:db8::/32"),
        ipaddress.IPv4Network("10.0.0.0/8"),
    )
    assert operator_allows(ipaddress.ip_address(address), networks) is allowed
