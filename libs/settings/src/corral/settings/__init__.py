"""Settings fragments shared by the services; each service composes its own ``Settings`` from them.

Build settings in ``main()``, never at import time. Every field is read from the environment with
the ``CORRAL_`` prefix shown on its class.
"""

from corral.settings.fragments import LogSettings, MetricsSettings, NatsSettings, PostgresSettings, TelemetrySettings
from corral.settings.machine import HOST_ID_PATTERN, host_id_of, host_id_or_machine, machine_host_id
from corral.settings.renames import renamed, renamed_in_use
from corral.settings.variables import Variable, describe, variable_name, variables

__all__ = [
    "HOST_ID_PATTERN",
    "LogSettings",
    "MetricsSettings",
    "NatsSettings",
    "PostgresSettings",
    "TelemetrySettings",
    "Variable",
    "describe",
    "host_id_of",
    "host_id_or_machine",
    "machine_host_id",
    "renamed",
    "renamed_in_use",
    "variable_name",
    "variables",
]
