"""``corral-dev``: the launcher behind ``make up`` / ``make down``.

    corral-dev up [--timeout S] [--no-services] [--docker | --no-docker] [--harness-count N]
    corral-dev down
    corral-dev status
    corral-dev logs [NAME] [-n LINES] [-f]
    corral-dev image [--rebuild] [--tag-only]

Global: ``--state-dir DIR`` (or ``CORRAL_STATE_DIR``; default ``.corral``), ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from corral.devstack import configuration, processes
from corral.devstack.errors import DevstackError
from corral.devstack.nats_users import SUBSCRIBER
from corral.devstack.postgres import EmbeddedPostgres
from corral.devstack.postgres_tools import redacted
from corral.devstack.progress import ConsoleProgress
from corral.devstack.stack import DEFAULT_TIMEOUT, STOP_TIMEOUT, Stack
from corral.devstack.state import StateDir


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="corral-dev", description="Run a Corral dev stack on this machine.")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state directory (default: $CORRAL_STATE_DIR or .corral)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start everything that is not running")
    up.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for health (default: $CORRAL_UP_TIMEOUT or 60)",
    )
    up.add_argument(
        "--no-services",
        action="store_true",
        help="only NATS, Postgres and OpenBao",
    )
    up.add_argument(
        "--docker",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a Docker engine and the sandbox image (default: $CORRAL_DOCKER, else on unless --no-services)",
    )
    up.add_argument(
        "--harness-count",
        type=int,
        default=None,
        help=f"harness processes (default: $CORRAL_HARNESS_COUNT or {configuration.DEFAULT_HARNESS_COUNT})",
    )

    down = commands.add_parser("down", help="stop everything (data is kept)")
    down.add_argument("--timeout", type=float, default=STOP_TIMEOUT)

    commands.add_parser("status", help="one line per component")

    image = commands.add_parser("image", help="build the sandbox image if missing; print its tag")
    image.add_argument("--rebuild", action="store_true", help="build even if the tag exists")
    image.add_argument("--tag-only", action="store_true", help="print the tag, build nothing")

    logs = commands.add_parser("logs", help="log file paths, or the tail of one")
    logs.add_argument("name", nargs="?", help="component (nats, postgres, gateway, ...)")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true", help="follow (tail -F)")
    return parser


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _up(stack: Stack, timeout: float) -> int:
    _out(f"corral-dev: starting the stack in {_display(stack.state.root)}")
    stack.start(timeout=timeout)
    _out()
    _out(f"  nats      {stack.nats_url}  (monitor {stack.nats_monitor_url})")
    postgres = stack.postgres
    secrets = f"  (passwords in {_display(postgres.passwords_file)})" if isinstance(postgres, EmbeddedPostgres) else ""
    _out(f"  postgres  {redacted(stack.database_url)}{secrets}")
    _out(
        f"  openbao   {stack.vault_addr}  (kv-v2 at {stack.kv_mount}/; unseal key and root token in "
        f"{_display(stack.state.openbao_init_file)}, a dev convenience; audit log "
        f"{_display(stack.openbao.audit_log)})"
    )
    if stack.docker_enabled:
        _out(f"  docker    {stack.docker_host}  (DOCKER_HOST; sandbox image {stack.sandbox_image})")
        trusted = stack.environment_ca_file or "the sandbox image's own CAs only"
        _out(f"  builds    environment images trust {trusted}  (CORRAL_SANDBOX_ENVIRONMENT_CA_FILE)")
    if stack.services_enabled:
        _out(f"  gateway   {', '.join(stack.gateway_urls)}")
        _out(f"  API key   {stack.api_key}")
        admin_file = _display(stack.state.admin_key_file)
        _out(f"  admin key {stack.admin_api_key}  (the admin API, /v1/organizations/...; also in {admin_file})")
        _out(f"  model     {stack.model.describe()}")
        endpoints = ", ".join(f"{name} {port}" for name, port in stack.metrics_ports().items())
        _out(f"  metrics   http://127.0.0.1:PORT/metrics (Prometheus), PORT per service: {endpoints}")
        env_file = _display(stack.state.env_file)
        _out(f"  client    set -a; . {env_file}; set +a   (ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY)")
    _out(
        f"  bus       read-only NATS user {SUBSCRIBER!r} for your own subscribers: set -a; . "
        f"{_display(stack.state.subscriber_env_file)}; set +a   (examples/bus_subscriber)"
    )
    _out(f"  logs      {_display(stack.state.logs_dir)}/  (corral-dev logs NAME)")
    _out("  stop      make down   (corral-dev down)")
    return 0


def _status(stack: Stack) -> int:
    all_running = True
    for status in stack.status():
        state = "running" if status.running else "stopped"
        pid = f"pid {status.pid}" if status.pid else "-"
        all_running = all_running and status.running
        _out(f"{status.name:<17} {state:<8} {pid:<11} {status.detail}")
    return 0 if all_running else 3


def _logs(stack: Stack, name: str | None, lines: int, follow: bool) -> int:
    if name is None:
        paths = sorted(stack.state.logs_dir.glob("*.log"))
        if not paths:
            _out(f"no logs in {_display(stack.state.logs_dir)}")
        for path in paths:
            _out(f"{path.stem:<17} {_display(path)}  ({path.stat().st_size} bytes)")
        return 0
    path = stack.log_path(name)
    if not path.exists():
        raise DevstackError(f"no log for {name!r} at {path}")
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", str(path)])
    _out(f"==> {_display(path)} <==")
    _out(processes.tail(path, lines))
    return 0


def _image(stack: Stack, rebuild: bool, tag_only: bool) -> int:
    if not tag_only:
        stack.build_image(rebuild=rebuild)
    _out(stack.sandbox_image or "")
    return 0


def _docker_default(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    """``up``: --docker/--no-docker, else CORRAL_DOCKER, else with the services."""
    if args.command != "up":
        return bool(args.command == "image")
    if args.docker is not None:
        return bool(args.docker)
    wanted = configuration.docker_wanted(environ)
    if wanted is not None:
        return wanted
    return not bool(args.no_services)


def _harness_count(args: argparse.Namespace, state_dir: Path) -> int | None:
    """``up``: --harness-count (else the configured default). Every other command: as many as the
    last ``up`` started (its record), so ``status`` and ``down`` see the stack that runs."""
    if args.command == "up":
        return args.harness_count  # type: ignore[no-any-return]
    recorded = StateDir.at(state_dir).read_record().get("harness_count")
    return recorded if isinstance(recorded, int) and recorded >= 1 else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="corral-dev: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    environ = configuration.process_environment()
    state_dir = args.state_dir or configuration.state_dir(environ)
    began = time.monotonic()
    try:
        stack = Stack(
            state_dir,
            services=not getattr(args, "no_services", False),
            harness_count=_harness_count(args, state_dir),
            docker=_docker_default(args, environ),
            environ=environ,
            progress=ConsoleProgress(sys.stdout),
        )
        if args.command == "up":
            return _up(
                stack, args.timeout if args.timeout is not None else configuration.up_timeout(environ, DEFAULT_TIMEOUT)
            )
        if args.command == "down":
            if not stack.state.root.is_dir():
                _out(f"corral-dev: nothing to stop ({_display(stack.state.root)} does not exist)")
                return 0
            stack.stop(timeout=args.timeout)
            _out(f"corral-dev: stopped in {time.monotonic() - began:.1f}s (data kept in {_display(stack.state.root)})")
            return 0
        if args.command == "status":
            return _status(stack)
        if args.command == "image":
            return _image(stack, args.rebuild, args.tag_only)
        return _logs(stack, args.name, args.lines, args.follow)
    except DevstackError as exc:
        sys.stderr.write(f"corral-dev: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("corral-dev: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
