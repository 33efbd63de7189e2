"""The harness starts without the ``anthropic`` SDK (its slowest import) and loads it in the background
once ready (``preload``), so no model request waits for the import."""

from __future__ import annotations

import subprocess
import sys

from corral.harness.deferredmodel import DeferredModel


def test_the_harness_starts_without_importing_the_sdk() -> None:
    probe = (
        "import sys, corral.harness.__main__; print(sorted(m for m in sys.modules if m.split('.')[0] == 'anthropic'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


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
