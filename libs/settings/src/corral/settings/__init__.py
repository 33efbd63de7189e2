"""Settings fragments shared by the services; each service composes its own ``Settings`` from them.

Build settings in ``main()``, never at import time. Every field is read from the environment with
the ``CORRAL_`` prefix shown on its class.
"""

from corral.settings.fragments import LogSettings, NatsSettings, PostgresSettings, TelemetrySettings
from corral.settings.renames import renamed, renamed_in_use
from corral.settings.variables import Variable, describe, variable_name, variables

__all__ = [
    "LogSettings",
    "NatsSettings",
    "PostgresSettings",
    "TelemetrySettings",
    "Variable",
    "describe",
    "renamed",
    "renamed_in_use",
    "variable_name",
    "variables",
]
