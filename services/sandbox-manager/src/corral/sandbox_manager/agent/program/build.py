"""Build mode: an environment image's build script, run with the egress relay, its exit code returned."""

from __future__ import annotations

import os
import subprocess
import sys

from .egress import EgressRelay
from .protocol import Config


def run_build(config: Config) -> int:
    """Build mode: relay to the egress proxy (when mounted), run ``build_script`` with
    ``bash -euo pipefail -c`` as this process's user, its output going to this process's stdout and
    stderr; its exit code (128 + N when killed by signal N)."""
    if config.egress_socket:
        EgressRelay(config.egress_socket, config.egress_port, config.egress_connections).start()
    sys.stdout.flush()
    # The container's own environment (the base image's ENV), not configuration of this service.
    environment = {**os.environ, **config.build_environment}  # noqa: TID251
    code = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", config.build_script or ""],
        stdin=subprocess.DEVNULL,
        env=environment,
        cwd="/",
        check=False,
    ).returncode
    return code if code >= 0 else 128 - code
