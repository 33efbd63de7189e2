"""The notes of credential hosts not reached: one per credential until taken, bounded per session and
in sessions (the least recently noted dropped first), never more than ids, a host and a reason."""

from __future__ import annotations

from corral.credential_proxy.host_failures import MAX_REASON_CHARS, HostFailures

BOUND = [("vcrd_1", "vlt_1"), ("vcrd_2", "vlt_2")]


def test_a_credential_is_noted_once_until_taken_with_its_first_host_and_attempts_counted() -> None:
    notes = HostFailures()
    notes.note("sesn_a", BOUND, "api.example.com", 443, "could not connect")
    notes.note("sesn_a", [BOUND[0]], "other.example.com", 8443, "refused")
    taken = notes.take("sesn_a")
    assert [(f.credential_id, f.vault_id, f.host, f.port, f.reason, f.attempts) for f in taken] == [
        ("vcrd_1", "vlt_1", "api.example.com", 443, "could not connect", 2),
        ("vcrd_2", "vlt_2", "api.example.com", 443, "could not connect", 1),
    ]
    assert notes.take("sesn_a") == []  # taken: forgotten
    notes.note("sesn_a", [BOUND[0]], "api.example.com", 443, "again")
    assert [(f.credential_id, f.attempts) for f in notes.take("sesn_a")] == [("vcrd_1", 1)]


def test_sessions_are_kept_apart_and_nothing_is_noted_without_a_bound_credential() -> None:
    notes = HostFailures()
    notes.note("sesn_a", [BOUND[0]], "a.example.com", 443, "x")
    notes.note("sesn_b", [], "b.example.com", 443, "x")
    assert len(notes) == 1 and notes.take("sesn_b") == []
    notes.forget("sesn_a")
    assert notes.take("sesn_a") == []


def test_each_session_keeps_at_most_max_per_session_credentials() -> None:
    notes = HostFailures(max_per_session=3)
    many = [(f"vcrd_{i}", "vlt_1") for i in range(10)]
    notes.note("sesn_a", many, "api.example.com", 443, "x")
    notes.note("sesn_a", [("vcrd_0", "vlt_1"), ("vcrd_9", "vlt_1")], "api.example.com", 443, "x")
    taken = notes.take("sesn_a")
    assert [(f.credential_id, f.attempts) for f in taken] == [("vcrd_0", 2), ("vcrd_1", 1), ("vcrd_2", 1)]


def test_at_most_max_sessions_are_kept_the_least_recently_noted_dropped_first() -> None:
    notes = HostFailures(max_sessions=2)
    notes.note("sesn_a", [BOUND[0]], "h", 443, "x")
    notes.note("sesn_b", [BOUND[0]], "h", 443, "x")
    notes.note("sesn_a", [BOUND[1]], "h", 443, "x")  # a is now the most recent
    notes.note("sesn_c", [BOUND[0]], "h", 443, "x")
    assert len(notes) == 2
    assert notes.take("sesn_b") == []
    assert [f.credential_id for f in notes.take("sesn_a")] == ["vcrd_1", "vcrd_2"]
    assert len(notes.take("sesn_c")) == 1


def test_a_long_reason_is_cut_to_one_short_line() -> None:
    notes = HostFailures()
    notes.note("sesn_a", [BOUND[0]], "h", 443, "line one\nline two " + "x" * 1000)
    [failure] = notes.take("sesn_a")
    assert len(failure.reason) == MAX_REASON_CHARS and "\n" not in failure.reason
    assert failure.reason.startswith("line one line two x")
