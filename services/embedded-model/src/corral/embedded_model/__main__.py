"""Entry point: ``python -m corral.embedded_model`` (or ``corral-embedded-model``)."""

from __future__ import annotations

import logging

import uvicorn
from pydantic import ValidationError

from corral.embedded_model.app import create_app
from corral.embedded_model.recording import RequestLog
from corral.embedded_model.script import (
    ScenarioBook,
    ScriptError,
    describe_validation_error,
    load_script_file,
)
from corral.embedded_model.settings import Settings
from corral.telemetry import configure_logging

logger = logging.getLogger("corral.embedded_model")

SHUTDOWN_GRACE_S = 5


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
    except ValidationError as exc:
        logger.error("invalid settings: %s", describe_validation_error(exc))
        raise SystemExit(2) from None
    configure_logging("embedded-model", settings.log)

    book = ScenarioBook()
    if settings.script is not None:
        try:
            document = load_script_file(settings.script)
        except ScriptError as exc:
            logger.error("%s (from %s)", exc, settings.script)
            raise SystemExit(2) from None
        book = ScenarioBook(document.scenarios)
        logger.info("loaded %d scenarios from %s", len(document.scenarios), settings.script)

    app = create_app(book, RequestLog(settings.max_recorded_requests), max_input_tokens=settings.max_input_tokens)
    # uvicorn installs SIGTERM/SIGINT handlers and shuts down gracefully on either (then
    # re-raises the signal, so the exit status says which one), waiting at most this long
    # for streams that are still open.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


if __name__ == "__main__":
    main()
