"""The model, loaded in the background once the harness is ready.

The Messages client's HTTP stack (``httpx2``) is the largest import of the harness's model path
(about 20 MB, 0.3 to 0.7 s on this kind of machine). ``DeferredModel`` imports the adapter
(``corral.harness.messagesmodel``) and builds its client in a worker thread, so the event loop keeps
renewing leases and answering health meanwhile: ``preload`` does it as soon as the harness is ready
(it then answers health and takes work without waiting for the import), and a request that comes
first waits for the same load. From then on it only forwards.

Loading only at the first request made that request pay the import: a takeover by a harness that had
not run a turn yet (B6) took ~0.76 s instead of ~0.18 s (measured with the ``anthropic`` SDK, whose
import was several times this one).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import TYPE_CHECKING

from corral.harness.model import ModelReply, ModelRequest, Summary, TextSink

if TYPE_CHECKING:
    from corral.harness.messagesmodel import MessagesModel

ADAPTER = "corral.harness.messagesmodel"

logger = logging.getLogger(__name__)


class DeferredModel:
    """``Model`` (and what the compactor asks: ``count_tokens``, ``summarise``) over the Messages API
    adapter, which is made by ``preload`` or the first request; ``close`` closes its client, if one
    was made."""

    def __init__(self, *, base_url: str | None, api_key: str) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._model: MessagesModel | None = None
        self._loading = asyncio.Lock()

    @property
    def state(self) -> str:
        """The model endpoint's state as the last request found it (``ok`` before the first)."""
        return self._model.state if self._model is not None else "ok"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    async def _adapter(self) -> MessagesModel:
        if self._model is not None:
            return self._model
        async with self._loading:
            if self._model is None:
                module = await asyncio.to_thread(importlib.import_module, ADAPTER)
                client = module.MessagesClient(base_url=self._base_url, api_key=self._api_key)
                self._model = module.MessagesModel(client)
            return self._model

    async def preload(self) -> None:
        """Load the adapter now, so no request waits for it; a failure is logged (the first request
        tries again, and reports it as its own error)."""
        try:
            await self._adapter()
        except Exception:
            logger.warning("could not load the model adapter ahead of the first request", exc_info=True)

    async def count_tokens(self, request: ModelRequest) -> int | None:
        return await (await self._adapter()).count_tokens(request)

    async def summarise(self, request: ModelRequest) -> Summary:
        return await (await self._adapter()).summarise(request)

    async def stream(self, request: ModelRequest, on_text: TextSink) -> ModelReply:
        return await (await self._adapter()).stream(request, on_text)

    async def close(self) -> None:
        if self._model is not None:
            await self._model.close()
