"""``Operation[Req, Rep]``: one request-reply operation on the bus, declared once.

A descriptor names the subject an operation is asked on, the queue group of the service that answers
it, the model its request is decoded into and the type its reply's ``result`` is read as. The same
descriptor is what a caller passes to ``Bus.call`` and what a service serves with
``corral.bus.Operations``, so a caller and its server cannot disagree on a subject or a shape, and
no code routes on operation names.

The wire format is the one Corral always spoke: the request is the request model's JSON, the reply
an ``RpcReply`` (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}``), except for
``enveloped=False`` operations (health), whose reply is the reply model's JSON alone. A reply
larger than one bus message travels through the bodies object store unless the operation is
``bounded`` (see ``corral.bus``). A ``secret`` operation's request never travels through the bodies
store: one larger than a bus message is refused (``PayloadTooLarge``) before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")


@dataclass(frozen=True, eq=False)
class Operation(Generic[Req, Rep]):
    """One operation: ``name`` (``agents.create``), its ``subject`` and the ``queue`` group serving it."""

    name: str
    subject: str
    queue: str
    service: str
    """Who answers it, for messages: ``session-store``, ``sandbox-manager``, ``credential-proxy``."""
    request: type[Req]
    reply_type: Any
    """The type of the reply's ``result``: a model, or ``dict[str, Any]`` for a public API object."""
    bounded: bool = False
    """The reply must fit one bus message (``max_payload``); otherwise it may be of any size."""
    enveloped: bool = True
    """The reply is an ``RpcReply``; ``False``: the reply is the reply model's JSON alone (health)."""
    secret: bool = False
    """The request carries a secret: it travels as one bus message or not at all, never through the
    bodies object store (a JetStream stream), so no secret is ever stored on the bus, even briefly."""
    _adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_adapter", TypeAdapter(self.reply_type))

    def parse_reply(self, result: Any) -> Rep:
        """The reply's ``result`` (plain JSON data) read as ``Rep``; raises ``pydantic.ValidationError``."""
        parsed: Rep = self._adapter.validate_python(result)
        return parsed

    def parse_reply_json(self, data: bytes) -> Rep:
        """A bare (``enveloped=False``) reply read as ``Rep``; raises ``pydantic.ValidationError``."""
        parsed: Rep = self._adapter.validate_json(data)
        return parsed

    def dump_reply(self, result: Rep) -> Any:
        """``result`` as plain JSON data, the way the reply carries it."""
        if isinstance(result, BaseModel):
            return result.model_dump(mode="json")
        return self._adapter.dump_python(result, mode="json")


def operation(
    name: str,
    subject: str,
    request: type[Req],
    reply: type[Rep],
    *,
    queue: str,
    service: str,
    bounded: bool = False,
    enveloped: bool = True,
    secret: bool = False,
) -> Operation[Req, Rep]:
    """Declare an operation (the typed constructor: ``reply`` fixes ``Rep``)."""
    return Operation(
        name=name,
        subject=subject,
        queue=queue,
        service=service,
        request=request,
        reply_type=reply,
        bounded=bounded,
        enveloped=enveloped,
        secret=secret,
    )
