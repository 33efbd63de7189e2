"""A grant's interception authority: its CA, the leaves it signs, its placeholders, its saved state."""

from __future__ import annotations

import ipaddress
import os
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography import x509

from corral.credential_proxy.session_ca import PLACEHOLDER_PREFIX, SessionAuthority


def test_a_leaf_names_its_host_and_verifies_against_the_grant_ca_only() -> None:
    authority, other = SessionAuthority.create("sesn_a"), SessionAuthority.create("sesn_b")
    leaf = authority.leaf("api.example.com")
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.example.com"]
    leaf.verify_directly_issued_by(authority.certificate)
    with pytest.raises(ValueError):  # not its issuer
        leaf.verify_directly_issued_by(other.certificate)
    constraints = authority.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0


def test_an_ip_address_host_gets_an_ip_address_subject_alternative_name() -> None:
    leaf = SessionAuthority.create("sesn_a").leaf("127.0.0.8")
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.8")]


def test_placeholders_are_unique_per_grant_and_credential_and_stable() -> None:
    a, b = SessionAuthority.create("sesn_a"), SessionAuthority.create("sesn_b")
    first = a.placeholder("vcrd_1")
    assert first.startswith(PLACEHOLDER_PREFIX) and len(first) == len(PLACEHOLDER_PREFIX) + 32
    assert first == a.placeholder("vcrd_1")
    assert len({first, a.placeholder("vcrd_2"), b.placeholder("vcrd_1")}) == 3


def test_a_saved_authority_is_private_and_loads_as_the_same_ca_and_placeholders(tmp_path: Path) -> None:
    authority = SessionAuthority.create("sesn_a")
    path = tmp_path / "sesn_a.json"
    authority.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = SessionAuthority.load(path)
    assert loaded.certificate == authority.certificate
    assert loaded.placeholder("vcrd_1") == authority.placeholder("vcrd_1")
    loaded.leaf("h.example").verify_directly_issued_by(authority.certificate)


def test_the_server_context_leaves_no_key_file_behind() -> None:
    before = set(Path(tempfile.gettempdir()).glob("corral-leaf-*"))
    SessionAuthority.create("sesn_a").server_context("api.example.com")
    assert set(Path(tempfile.gettempdir()).glob("corral-leaf-*")) == before
