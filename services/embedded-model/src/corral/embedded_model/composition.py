"""The embedded model's composition root: the script (if any), the app, uvicorn until stopped."""

from __future__ import annotations

import logging

import uvicorn

from corral.embedded_model.app import create_app
from corral.embedded_model.recording import RequestLog
from corral.embedded_model.script import ScenarioBook, ScriptError, load_script_file
from corral.embedded_model.settings import Settings
from corral.runner import Lifetime, Refused
from corral.runner.asgi import serve_asgi

logger = logging.getLogger("corral.embedded_model")

#: How long a stop waits for streams that are still open.
SHUTDOWN_GRACE_S = 5


async def serve(settings: Settings, life: Lifetime) -> None:
    book = ScenarioBook()
    if settings.script is not None:
        try:
            document = load_script_file(settings.script)
        except ScriptError as exc:
            raise Refused(f"{exc} (from {settings.script}; CORRAL_EMBEDDED_MODEL_SCRIPT)") from None
        book = ScenarioBook(document.scenarios)
        logger.info("loaded %d scenarios from %s", len(document.scenarios), settings.script)

    app = create_app(book, RequestLog(settings.max_recorded_requests), max_input_tokens=settings.max_input_tokens)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    serve_asgi(life, config, url=f"http://{settings.host}:{settings.port}")
