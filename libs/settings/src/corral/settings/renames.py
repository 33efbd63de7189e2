"""Variables that were renamed: the old name keeps working for one release, with a warning.

A field declares ``validation_alias=renamed("CORRAL_NEW", "CORRAL_OLD")``: the new name wins when
both are set. ``renamed_in_use()`` lists the old names set in this process's environment, which
``corral.runner`` logs as deprecation warnings once logging is up.
"""

from __future__ import annotations

import os

from pydantic import AliasChoices

#: old name -> its new names, for every rename declared so far (one old name may have become one
#: per service, e.g. ``CORRAL_HEALTH_PROBE_TIMEOUT_S``; a service imports only its own settings).
RENAMED: dict[str, list[str]] = {}


def renamed(new: str, old: str) -> AliasChoices:
    """Read ``new``, else (deprecated) ``old``."""
    news = RENAMED.setdefault(old, [])
    if new not in news:
        news.append(new)
    return AliasChoices(new, old)


def renamed_in_use() -> list[tuple[str, str]]:
    """``(old, new)`` for each deprecated name set in the environment."""
    return [(old, new) for old, news in sorted(RENAMED.items()) if old in os.environ for new in news]
