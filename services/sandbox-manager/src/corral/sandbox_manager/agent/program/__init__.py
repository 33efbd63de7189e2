"""The exec agent: the entry process of every sandbox container, running the built-in toolset.

It is started as ``python3 -c <loader> <config json>`` (standard library only; the sandbox image
has python3 and bash; the loader, built by ``corral.sandbox_manager.agent.source()``, carries these
modules and imports them from memory) and talks JSON lines over its stdin and stdout, which the
sandbox-manager reaches through a Docker attach socket:

    request   {"id": 7, "tool": "bash", "input": {"command": "ls"}, "timeout_ms": 120000}
    response  {"id": 7, "content": [{"type": "text", "text": "..."}], "is_error": false}

A reply whose text is longer than ``part_bytes`` (UTF-8 bytes) goes in parts, one line each, never
interleaved with another line: ``{"id": 7, "part": 0, "parts": 3, "bytes": <the whole text's size>,
"content": [{"type": "text", "text": <a piece>}], "is_error": false}``, then parts 1 and 2; every
piece but the last holds at least ``part_bytes - 3`` bytes (pieces are cut between characters). So
every line stays within the manager's frame limit however long the output kept (``output_limit``).

Two requests are answered at once on the reading thread: ``ping`` (readiness) and ``cancel``
(``input.target`` names the request to stop, ``"*"`` stops every running request). The others run
on a fixed pool of worker threads, started before any tool runs, so the agent keeps answering when
a fork bomb has taken every pid.

When the environment allows network access, the container still has no network interface but
loopback: the agent relays TCP connections to ``127.0.0.1:<egress_port>`` (where ``HTTP_PROXY`` and
``HTTPS_PROXY`` point) to the egress proxy's unix socket mounted at ``egress_socket``, and the proxy
decides, per request, which hosts the session may reach. Nothing else leaves the container.

In build mode (``build_script`` in the config: an environment image's build container, run as root
with the same network ``none`` and the build's egress socket) it starts the same relay, runs the
script with ``bash -euo pipefail -c``, its output going straight to the container's stdout and
stderr, and exits with the script's exit code; nothing is read from stdin.

As PID 1 it forks: the parent stays PID 1 and only reaps orphans (zombies would otherwise fill the
pids limit) and forwards signals, and the child is the agent.

Only the agent writes to its stdout and stderr (the manager's stream): before anything else it makes
itself non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``, kept across the fork), so the tools, which run
as the same user, can neither open its descriptors through ``/proc/<pid>/fd`` nor ptrace it. The
tools never inherit them either: bash gets pipes of its own (stderr merged into stdout, read only
while a call runs and capped), each command's stdin is ``/dev/null``, and every other descriptor is
closed on exec. Its ``ping`` reply says whether the seal took (``sealed``).

Relative paths are relative to the workspace root (``/workspace``). Absolute paths are allowed: the
container is the boundary, not the tools.

The modules, each named for what it holds: ``protocol`` (the config argument, results, errors),
``cancellation`` (a running call's deadline and cancel flag), ``text`` (capping and cleaning
output), ``server`` (the JSON-lines wire), ``toolbox`` (dispatch), ``arguments`` (tool input
checks), ``shell`` and ``output`` (the persistent bash and its output collector), ``files`` (read,
write, edit), ``globbing`` and ``search`` (glob, grep), ``egress`` (the relay), ``sealing``,
``reaper`` (PID 1), ``build`` (build mode) and ``main`` (the entry point).
"""
