"""``run``: settings, telemetry, signals, the service's lifetime, a grace period, the exit status.

- settings that do not validate: one line on stderr naming each variable at fault, exit status 2;
- telemetry (logs, traces) configured from the settings' ``log`` fragment, and flushed on the way out;
  every log record at ERROR counted in ``corral_errors_total``;
- the Prometheus metrics endpoint served while the service runs, when its settings' ``metrics``
  fragment gives it a port (``CORRAL_<SERVICE>_METRICS_PORT``; see ``corral.telemetry.metrics``);
- SIGTERM and SIGINT set the stop event (nothing else: the service stops itself, in order);
- the composition root runs in an ``AsyncExitStack`` and a ``TaskGroup`` (see ``Lifetime``); once
  stopped it has ``grace_s`` to finish, then it is cancelled;
- ``Refused`` from it: one line, its exit status; any other failure: logged, exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

import uvloop
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from corral import telemetry
from corral.runner.lifetime import Lifetime, Refused
from corral.settings import LogSettings, MetricsSettings, describe, renamed_in_use, variable_name
from corral.telemetry import metrics

logger = logging.getLogger("corral.runner")

S = TypeVar("S", bound=BaseSettings)
#: A service's composition root: set up in ``life``, call ``life.ready()``, return (or serve until ``life.stop``).
Build = Callable[[S, Lifetime], Awaitable[None]]

#: How long a stopped service has to finish before it is cancelled, unless it says otherwise.
DEFAULT_GRACE_S = 20.0


async def serve(
    name: str, build: Build[S], settings: S, stop: asyncio.Event, *, ready: asyncio.Event | None = None
) -> None:
    """Run ``build`` in a fresh ``Lifetime`` until ``stop`` and every task has ended (no signals, no
    grace: ``run`` adds those; tests call this directly). ``ready`` is set by ``life.ready()``."""
    async with contextlib.AsyncExitStack() as stack:
        await _serve_metrics(name, settings, stack)  # closed last, once the stack has closed the rest
        async with asyncio.TaskGroup() as tasks:
            life = Lifetime(name, stop, stack, tasks, ready if ready is not None else asyncio.Event())
            await build(settings, life)
            await stop.wait()
            life.cancel_background()


async def _serve_metrics(name: str, settings: BaseSettings, stack: contextlib.AsyncExitStack) -> None:
    """Serve the metrics endpoint until ``stack`` closes, if the settings give it a port.

    Raises:
        Refused: the port is taken (the message names the variable to change).
    """
    wanted = getattr(settings, "metrics", None)
    if not isinstance(wanted, MetricsSettings) or wanted.port is None:
        return
    try:
        endpoint = metrics.serve(wanted.host, wanted.port)
    except OSError as exc:
        variable = variable_name(type(wanted), "port")
        raise Refused(
            f"cannot serve metrics on {wanted.host}:{wanted.port} ({exc.strerror or exc}); set {variable} "
            "to a free port, or unset it to serve none"
        ) from None
    stack.push_async_callback(asyncio.to_thread, endpoint.close)
    logger.info(
        "%s metrics on http://%s:%d/metrics",
        name,
        endpoint.host,
        endpoint.port,
        extra={"fields": {"metrics_host": endpoint.host, "metrics_port": endpoint.port}},
    )


async def _until_stopped(name: str, build: Build[S], settings: S, grace_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.ensure_future(serve(name, build, settings, stop))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            logger.info("%s stopping", name)
            await asyncio.wait({serving}, timeout=grace_s)
            if not serving.done():
                logger.warning("%s did not stop within %.0f s; cancelling what is left", name, grace_s)
                serving.cancel()
    finally:
        stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    logger.info("%s stopped", name)


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    found: list[Exception] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _refuse(name: str, message: str) -> None:
    sys.stderr.write(f"corral-{name}: {message}\n")
    sys.stderr.flush()


def run(
    name: str,
    settings_type: type[S],
    build: Build[S],
    *,
    grace_s: float | Callable[[S], float] = DEFAULT_GRACE_S,
    event_loop: Literal["uvloop", "asyncio"] = "uvloop",
) -> None:
    """Start service ``name`` (``python -m corral.<name>``) and exit when it has stopped.

    Raises:
        SystemExit: 2 on invalid settings or a ``Refused`` start; 1 when the service failed.
    """
    try:
        settings = settings_type()
    except ValidationError as exc:
        _refuse(name, f"invalid settings: {describe(exc, settings_type)}")
        raise SystemExit(2) from None
    logs = getattr(settings, "log", None)
    telemetry.configure(name, logs=logs if isinstance(logs, LogSettings) else None)
    metrics.count_errors()
    for old, new in renamed_in_use():
        logger.warning("%s is deprecated and will stop working in the next release; set %s instead", old, new)
    grace = grace_s(settings) if callable(grace_s) else grace_s
    main: Coroutine[Any, Any, None] = _until_stopped(name, build, settings, grace)
    code = 0
    try:
        if event_loop == "uvloop":
            uvloop.run(main)
        else:
            asyncio.run(main)
    except Refused as exc:
        logger.error("%s refused to start: %s", name, exc)
        code = exc.exit_code
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        refusal = next((e for e in leaves if isinstance(e, Refused)), None)
        if refusal is not None:
            logger.error("%s refused to start: %s", name, refusal)
            code = refusal.exit_code
        else:
            exits = [e for e in leaves if isinstance(e, SystemExit)]
            if exits:
                raise exits[0] from None
            logger.error("%s failed", name, exc_info=group)
            code = 1
    finally:
        telemetry.shutdown()
    if code:
        raise SystemExit(code)
