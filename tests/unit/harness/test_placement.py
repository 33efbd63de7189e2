"""Placement of a session's sandbox on a sandbox host: the choice from the hosts' advertisements, the
record every caller agrees on, and a move to another host when the session's host stops answering."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from corral.bus import Bus, Entry, KeyChanged, KeyExists, NoResponders
from corral.contracts import sandbox
from corral.contracts.rpc import RpcReply
from corral.contracts.sandbox import SandboxHost, SandboxPlacement
from corral.contracts.sandbox_hosts import SANDBOX_HOSTS_BUCKET, SANDBOX_PLACEMENTS_BUCKET
from corral.harness.credentialhosts import BusCredentialHosts
from corral.harness.placement import Placements, choose_host
from corral.harness.sandbox import BusSandbox, ManagerWait


def host(
    name: str, *, ready: bool = True, sessions: int = 0, capacity: int | None = None, warm: int = 0
) -> SandboxHost:
    return SandboxHost(
        host=name, instance=f"sm-{name}", ready=ready, sessions=sessions, capacity=capacity, warm=warm, at=time.time()
    )


def test_a_host_with_a_warm_sandbox_is_chosen_first() -> None:
    hosts = [host("a", sessions=0), host("b", sessions=5, warm=1)]
    assert choose_host(hosts) == hosts[1]


def test_then_the_host_with_the_most_room() -> None:
    hosts = [host("a", sessions=2, capacity=4), host("b", sessions=2, capacity=10), host("c", sessions=9, capacity=10)]
    assert choose_host(hosts).host == "b"  # type: ignore[union-attr]
    # no limit is more room than any limit; then the fewest sessions
    assert choose_host([host("a", sessions=1, capacity=100), host("b", sessions=3)]).host == "b"  # type: ignore[union-attr]
    assert choose_host([host("a", sessions=3), host("b", sessions=1)]).host == "b"  # type: ignore[union-attr]


def test_hosts_not_ready_full_or_excluded_are_never_chosen() -> None:
    hosts = [host("a", ready=False, warm=3), host("b", sessions=4, capacity=4, warm=3), host("c"), host("d")]
    assert choose_host(hosts).host == "c"  # type: ignore[union-attr]
    assert choose_host(hosts, exclude={"c"}).host == "d"  # type: ignore[union-attr]
    assert choose_host(hosts, exclude={"c", "d"}) is None
    assert choose_host([]) is None


class FakeKV:
    """A key-value bucket with revisions and compare-and-set, like JetStream's."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.revision = 0
        self.writes = 0
        self.listings = 0

    async def get(self, key: str) -> Entry | None:
        await asyncio.sleep(0)  # a round trip: lets concurrent callers interleave
        return self.entries.get(key)

    async def keys(self) -> list[str]:
        self.listings += 1
        await asyncio.sleep(0)
        return sorted(self.entries)

    def _write(self, key: str, value: bytes) -> int:
        self.revision += 1
        self.writes += 1
        self.entries[key] = Entry(value=value, revision=self.revision)
        return self.revision

    async def put(self, key: str, value: bytes) -> int:
        return self._write(key, value)

    async def create(self, key: str, value: bytes) -> int:
        await asyncio.sleep(0)
        if key in self.entries:
            raise KeyExists(key)
        return self._write(key, value)

    async def update(self, key: str, value: bytes, *, last: int) -> int:
        await asyncio.sleep(0)
        if key not in self.entries or self.entries[key].revision != last:
            raise KeyChanged(key)
        return self._write(key, value)


class FakeBus:
    """The two buckets, and ``execute`` served by the hosts in ``serving`` (the others: no responders)."""

    def __init__(self, *hosts: SandboxHost) -> None:
        self.buckets = {SANDBOX_HOSTS_BUCKET: FakeKV(), SANDBOX_PLACEMENTS_BUCKET: FakeKV()}
        for h in hosts:
            self.advertise(h)
        self.serving: set[str] = {h.host for h in hosts}
        self.requests: list[str] = []

    def advertise(self, h: SandboxHost) -> None:
        self.buckets[SANDBOX_HOSTS_BUCKET].entries[h.host] = Entry(value=h.model_dump_json().encode(), revision=1)

    def expire(self, name: str) -> None:
        del self.buckets[SANDBOX_HOSTS_BUCKET].entries[name]

    def placement(self, session_id: str) -> SandboxPlacement:
        entry = self.buckets[SANDBOX_PLACEMENTS_BUCKET].entries[session_id]
        return SandboxPlacement.model_validate_json(entry.value)

    async def bind_key_value(self, spec: Any) -> FakeKV:
        return self.buckets[spec.name]

    @contextlib.asynccontextmanager
    async def listen(self, subject: str, callback: Callable[[bytes], None]) -> AsyncIterator[None]:
        yield

    call = Bus.call

    async def request(self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True) -> bytes:
        self.requests.append(subject)
        on = subject.split(".")[4] if subject.startswith("corral.rpc.sandbox.host.") else None
        if on is None or on not in self.serving:
            raise NoResponders(subject)
        outcome = {"content": [{"type": "text", "text": on}], "is_error": False, "executed": True, "duration_ms": 1}
        return RpcReply(ok=True, result=outcome).model_dump_json().encode()


async def test_a_session_is_placed_once_and_stays_while_its_host_is_advertised() -> None:
    bus = FakeBus(host("a", sessions=3), host("b", sessions=1))
    placements = Placements(cast(Bus, bus), fresh_s=0)
    assert await placements.host_for("sesn_1") == "b"
    bus.advertise(host("a", sessions=0, warm=2))  # a better host now: the session stays where its sandbox is
    assert await placements.host_for("sesn_1") == "b"
    assert bus.placement("sesn_1").host == "b"


async def test_concurrent_callers_place_a_session_on_one_host() -> None:
    bus = FakeBus(host("a"), host("b"))
    placements = [Placements(cast(Bus, bus), fresh_s=0) for _ in range(2)]
    # each caller sees the other's write land between its read and its own write (FakeKV yields)
    first, second = await asyncio.gather(*(p.host_for("sesn_1") for p in placements))
    assert first == second == bus.placement("sesn_1").host


async def test_a_session_whose_host_is_gone_moves_and_says_where_from() -> None:
    bus = FakeBus(host("a", warm=1), host("b"))
    placements = Placements(cast(Bus, bus), fresh_s=0)
    assert await placements.host_for("sesn_1") == "a"
    bus.expire("a")  # its advertisement expired: the host died
    assert await placements.host_for("sesn_1") == "b"
    assert bus.placement("sesn_1").previous == "a"
    # a host found not answering is left even while its advertisement lasts
    bus.advertise(host("a", warm=1))
    assert await placements.host_for("sesn_1", gone={"b"}) == "a"


async def test_with_no_host_advertised_calls_use_the_queue_group() -> None:
    bus = FakeBus()
    assert await Placements(cast(Bus, bus), fresh_s=0).host_for("sesn_1") is None


async def test_a_call_to_a_host_nothing_serves_runs_on_another_host() -> None:
    bus = FakeBus(host("a", warm=1), host("b"))
    box = BusSandbox(cast(Bus, bus))
    request = sandbox.Execute(
        session_id="sesn_1", tool_use_id="sevt_1", name="bash", input={"command": "ls"}, environment_id="env_1"
    )
    assert (await box.execute(request, timeout_s=5)).content[0].text == "a"
    bus.serving.discard("a")  # host a's manager was killed; its advertisement has not expired yet
    outcome = await box.execute(request.model_copy(update={"tool_use_id": "sevt_2"}), timeout_s=5)
    assert outcome.content[0].text == "b"
    assert bus.requests == [
        "corral.rpc.sandbox.host.a.execute",
        "corral.rpc.sandbox.host.a.execute",
        "corral.rpc.sandbox.host.b.execute",
    ]
    assert bus.placement("sesn_1").host == "b"
    assert json.loads(bus.buckets[SANDBOX_PLACEMENTS_BUCKET].entries["sesn_1"].value)["previous"] == "a"


async def test_with_every_host_gone_a_call_waits_for_one_to_come_back() -> None:
    class HostBack(FakeBus):
        async def request(
            self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True
        ) -> bytes:
            if len(self.requests) == 6:  # host a's manager restarted (same host id)
                self.serving.add("a")
            return await super().request(subject, data, timeout=timeout, spill=spill)

    bus = HostBack(host("a"))
    bus.serving.clear()  # killed; its advertisement has not expired yet, and no other host answers
    box = BusSandbox(cast(Bus, bus), manager_wait=ManagerWait(wait_s=10, first_retry_s=0.01, max_retry_s=0.02))
    request = sandbox.Execute(
        session_id="sesn_1", tool_use_id="sevt_1", name="bash", input={"command": "ls"}, environment_id="env_1"
    )
    assert (await box.execute(request, timeout_s=5)).content[0].text == "a"
    # each attempt: the host, then the queue group; the session stays placed on its host
    assert bus.requests[:2] == ["corral.rpc.sandbox.host.a.execute", "corral.rpc.sandbox.execute"]
    assert bus.requests[-1] == "corral.rpc.sandbox.host.a.execute"
    assert bus.placement("sesn_1").host == "a"


async def test_the_hosts_are_listed_once_per_freshness_window_however_many_sessions_ask() -> None:
    """Listing a bucket's keys costs a JetStream consumer (at most 1,000 per stream): 200 sessions
    dispatching at once share one listing, and a later one lists again."""
    bus = FakeBus(host("a"), host("b"))
    now = [100.0]
    placements = Placements(cast(Bus, bus), fresh_s=1.0, clock=lambda: now[0])
    listed = bus.buckets[SANDBOX_HOSTS_BUCKET]

    chosen = await asyncio.gather(*(placements.host_for(f"sesn_{n}") for n in range(200)))

    assert set(chosen) <= {"a", "b"} and listed.listings == 1
    bus.expire("a")
    now[0] += 0.5
    assert set(await placements.hosts()) == {"a", "b"} and listed.listings == 1  # still fresh
    now[0] += 0.6
    assert set(await placements.hosts()) == {"b"} and listed.listings == 2


class EgressFakeBus(FakeBus):
    """Each credential-proxy answers ``failures`` from its own notes (by subject); the queue group
    is served by the first."""

    def __init__(self, *hosts: SandboxHost) -> None:
        super().__init__(*hosts)
        self.notes = {
            "corral.rpc.egress.failures": [],
            "corral.rpc.egress.host.egress-b.failures": [
                {"credential_id": "vcrd_1", "vault_id": "vlt_1", "host": "api.example", "port": 443, "reason": "502"}
            ],
        }

    async def request(self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True) -> bytes:
        self.requests.append(subject)
        if subject not in self.notes:
            raise NoResponders(subject)
        return RpcReply(ok=True, result={"failures": self.notes[subject]}).model_dump_json().encode()


async def test_credential_host_notes_are_asked_of_the_credential_proxy_of_the_sessions_host() -> None:
    bus = EgressFakeBus(
        host("a").model_copy(update={"egress_host": "egress-a"}),
        host("b", warm=1).model_copy(update={"egress_host": "egress-b"}),
    )
    placements = Placements(cast(Bus, bus), fresh_s=0)
    hosts = BusCredentialHosts(cast(Bus, bus), placements=placements)
    assert await hosts.take_failures("sesn_1") == []  # not placed yet: the queue group
    assert await placements.host_for("sesn_1") == "b"
    [failure] = await hosts.take_failures("sesn_1")
    assert failure.credential_id == "vcrd_1"
    assert bus.requests == ["corral.rpc.egress.failures", "corral.rpc.egress.host.egress-b.failures"]


async def test_a_host_naming_no_credential_proxy_has_its_notes_asked_of_the_queue_group() -> None:
    bus = EgressFakeBus(host("a"))
    placements = Placements(cast(Bus, bus), fresh_s=0)
    assert await placements.host_for("sesn_1") == "a"
    assert await BusCredentialHosts(cast(Bus, bus), placements=placements).take_failures("sesn_1") == []
    assert bus.requests == ["corral.rpc.egress.failures"]
