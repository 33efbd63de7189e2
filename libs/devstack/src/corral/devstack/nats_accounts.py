"""The two NATS accounts: ``CORRAL`` (``admin``, the services, Corral's streams) and ``SUBSCRIBERS``
(the read-only ``subscriber`` user, for an operator's own programs, and mirrors of the session log
and the catalog), with the few subjects they exchange so that the mirrors follow their origins.

An account is a subject space of its own: whatever the ``subscriber`` user asks, it asks of its own
account, whose JetStream holds only the mirrors and the consumers subscribers make on them. The
only subjects of ``SUBSCRIBERS`` that lead into ``CORRAL`` serve the mirrors' own consumers, and the
user may publish to none of them (``DENIED_TO_SUBSCRIBERS``). See ``mirror_links``.
"""

from __future__ import annotations

from pathlib import Path

from corral.contracts.subscribers import MIRRORED_STREAMS, MIRRORS_API, ORIGIN_API, mirror_delivery
from corral.devstack.nats_users import ADMIN, SUBSCRIBER, NatsUsers, Permissions, inbox, service_permissions

CORRAL_ACCOUNT = "CORRAL"
"""The NATS account of ``admin``, the services and Corral's streams."""

SUBSCRIBERS_ACCOUNT = "SUBSCRIBERS"
"""The NATS account of external subscribers: the ``subscriber`` user and the mirrors it reads."""


def subscriber_read(stream: str) -> tuple[str, ...]:
    """Read the mirror of ``stream`` in the subscribers' account through durable pull consumers of
    one's own: create one (``CREATE`` with its name and filter in the subject, as nats-py and nats.go
    send it), look at it, fetch from it, acknowledge, list and delete them; and get single messages
    (the earlier parts of a record stored in parts). Consumers there are the subscribers' own: none
    of Corral's."""
    return (
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.*",
        f"$JS.API.CONSUMER.CREATE.{stream}.*.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*",  # what older clients send
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.API.CONSUMER.LIST.{stream}",
        f"$JS.API.CONSUMER.NAMES.{stream}",
        f"$JS.ACK.{stream}.*.>",
    )


#: What the ``subscriber`` user is denied, whatever its allow list says: changing the mirrors, and
#: the subjects that lead into Corral's account (they serve the mirrors, never a client).
DENIED_TO_SUBSCRIBERS: tuple[str, ...] = (
    "$JS.API.STREAM.CREATE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.ACCOUNT.>",
    "$JS.API.SERVER.>",
    "$JS.API.META.>",
    f"{ORIGIN_API}.>",
    "$JS.FC.>",
)


def subscriber_permissions() -> Permissions:
    """The ``subscriber`` user, in the ``SUBSCRIBERS`` account: reads the mirrors of the session log
    and the catalog through consumers of its own (``subscriber_read``), subscribes only to its own
    inbox (``_INBOX.subscriber.>``: a client sets that prefix), answers no requests."""
    return Permissions(
        publish=unique(*(subscriber_read(stream) for stream in MIRRORED_STREAMS)),
        subscribe=(inbox(SUBSCRIBER),),
        deny_publish=DENIED_TO_SUBSCRIBERS,
        responds=False,
    )


def mirror_links() -> tuple[dict[str, object], dict[str, object]]:
    """The exports and imports of the two accounts, as ``(CORRAL, SUBSCRIBERS)`` config fragments.

    A mirror in ``SUBSCRIBERS`` reads its origin in ``CORRAL`` through a push consumer the server
    makes there: ``CORRAL`` exports, for each mirrored stream only, the consumer-create request
    (``$JS.API.CONSUMER.CREATE.<stream>``, imported as ``ORIGIN_API``), its flow control
    (``$JS.FC.<stream>.>``) and its deliveries (``mirror_delivery``). ``SUBSCRIBERS`` exports its
    JetStream API to ``CORRAL`` (imported as ``MIRRORS_API``), for the session-store alone.
    """
    to_subscribers, to_corral = [SUBSCRIBERS_ACCOUNT], [CORRAL_ACCOUNT]
    corral_exports: list[dict[str, object]] = []
    subscriber_imports: list[dict[str, object]] = []
    for stream in MIRRORED_STREAMS:
        create, flow, deliveries = (
            f"$JS.API.CONSUMER.CREATE.{stream}",
            f"$JS.FC.{stream}.>",
            f"{mirror_delivery(stream)}.>",
        )
        corral_exports += [
            {"service": create, "accounts": to_subscribers},
            {"service": flow, "accounts": to_subscribers},
            {"stream": deliveries, "accounts": to_subscribers},
        ]
        subscriber_imports += [
            {
                "service": {"account": CORRAL_ACCOUNT, "subject": create},
                "to": f"{ORIGIN_API}.CONSUMER.CREATE.{stream}",
            },
            {"service": {"account": CORRAL_ACCOUNT, "subject": flow}},
            {"stream": {"account": CORRAL_ACCOUNT, "subject": deliveries}},
        ]
    corral = {
        "exports": corral_exports,
        "imports": [{"service": {"account": SUBSCRIBERS_ACCOUNT, "subject": "$JS.API.>"}, "to": f"{MIRRORS_API}.>"}],
    }
    subscribers = {"exports": [{"service": "$JS.API.>", "accounts": to_corral}], "imports": subscriber_imports}
    return corral, subscribers


def move_global_store(store_dir: Path) -> None:
    """A store made before the accounts held Corral's streams in the global account (``$G``): they
    are ``CORRAL``'s now (JetStream keeps an account's streams under ``jetstream/<account>``)."""
    old, new = store_dir / "jetstream" / "$G", store_dir / "jetstream" / CORRAL_ACCOUNT
    if old.is_dir() and not new.exists():
        old.rename(new)


def accounts(users: NatsUsers) -> dict[str, object]:
    """The server config's ``accounts`` block: ``CORRAL`` and ``SUBSCRIBERS`` with their users."""
    passwords = users.passwords()
    corral_users: list[dict[str, object]] = [{"user": ADMIN, "password": passwords[ADMIN]}]
    for user, permissions in service_permissions().items():
        corral_users.append({"user": user, "password": passwords[user], "permissions": permissions.config()})
    subscriber = {
        "user": SUBSCRIBER,
        "password": passwords[SUBSCRIBER],
        "permissions": subscriber_permissions().config(),
    }
    corral, subscribers = mirror_links()
    return {
        CORRAL_ACCOUNT: {"jetstream": "enabled", "users": corral_users, **corral},
        SUBSCRIBERS_ACCOUNT: {"jetstream": "enabled", "users": [subscriber], **subscribers},
    }


def unique(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for group in groups for s in group))
