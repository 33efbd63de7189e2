"""The entry point: read the config argument, then serve the tools (or run a build)."""

from __future__ import annotations

import json
import os
import sys

from .build import run_build
from .egress import EgressRelay
from .protocol import Config
from .reaper import become_init_reaper
from .sealing import seal
from .server import Server
from .toolbox import Toolbox
from .trust import write_bundle


def main(argv: list[str]) -> None:
    raw = json.loads(argv[1]) if len(argv) > 1 else {}
    config = Config(**{k: v for k, v in raw.items() if k in Config.__dataclass_fields__})
    if config.build_script is not None:
        if os.getpid() == 1:
            become_init_reaper()
        sys.exit(run_build(config))
    sealed = seal()
    if os.getpid() == 1:
        become_init_reaper()
    os.makedirs(config.root, exist_ok=True)
    os.chdir(config.root)
    if config.egress_socket:
        EgressRelay(config.egress_socket, config.egress_port, config.egress_connections).start()
    if config.egress_ca and config.egress_ca_bundle:
        write_bundle(config.egress_ca_bundle, config.egress_ca)
    Server(Toolbox(config), sys.stdin.buffer, sys.stdout.buffer, sealed=sealed).serve()
