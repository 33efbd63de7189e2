"""The caller's side of an operation (``Bus.call``): its reply read back into the operation's reply
shape, or the error reply it carries raised as an ``ApiError``."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from corral.bus.errors import UnreadableReply
from corral.contracts.api.errors import ApiError
from corral.contracts.operation import Operation
from corral.contracts.rpc import RpcReply

#: The record an unreadable reply leaves is ``Bus.call``'s, under the client's logger name.
logger = logging.getLogger("corral.bus.client")

Req = TypeVar("Req", bound=BaseModel)
Rep = TypeVar("Rep")


def read_reply(op: Operation[Req, Rep], raw: bytes) -> Rep:
    """``op``'s result in ``raw`` (its reply as received).

    Raises:
        ApiError: the service answered with an error reply (its type, message and ``error_code``).
        UnreadableReply: the reply is not the operation's reply shape.
    """
    try:
        if not op.enveloped:
            return op.parse_reply_json(raw)
        reply = RpcReply.model_validate_json(raw)
        if reply.ok:
            return op.parse_reply(reply.result)
    except ValidationError as exc:
        logger.error(
            "unreadable reply",
            extra={"fields": {"op": op.name, "errors": exc.errors(include_url=False, include_input=False)[:3]}},
        )
        raise UnreadableReply(op.name, op.service, exc.error_count()) from exc
    if reply.error is None:
        raise ApiError("api_error", f"the {op.service} failed {op.name} without saying why")
    raise ApiError.from_detail(reply.error)
