"""The harness never imports the ``anthropic`` SDK, and starts without the Messages client's HTTP stack
(``httpx2``), which it loads in the background once ready (``preload``), so no model request waits
for the import."""

from __future__ import annotations

import subprocess
import sys

from corral.harness.deferredmodel import DeferredModel


def test_the_harness_starts_without_its_http_stack_and_never_imports_the_sdk() -> None:
    probe = (
        "import asyncio, sys, corral.harness.__main__\n"
        "from corral.harness.deferredmodel import DeferredModel\n"
        "def loaded(): return sorted({m.split('.')[0] for m in sys.modules} & {'anthropic', 'httpx2'})\n"
        "print(loaded())\n"
        "asyncio.run(DeferredModel(base_url='http://127.0.0.1:9', api_key='k').preload())\n"
        "print(loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["[]", "['httpx2']"]


async def test_the_model_is_ok_and_unloaded_until_its_first_request() -> None:
    model = DeferredModel(base_url="http://127.0.0.1:9", api_key="sk-test")
    assert model.state == "ok"
    assert not model.loaded
    await model.close()  # nothing was made: nothing to close


async def test_preload_makes_the_model_before_any_request() -> None:
    model = DeferredModel(base_url="http://127.0.0.1:9", api_key="sk-test")
    await model.preload()
    assert model.loaded
    await model.close()
