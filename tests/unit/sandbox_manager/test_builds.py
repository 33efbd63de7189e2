"""The pieces of an environment image build that need no engine: the build container's configuration
(network, mounts, capabilities, limits), the config it is committed with, its output split into
lines, and the exec agent's build mode run as a process."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from corral.sandbox_manager.agent import source
from corral.sandbox_manager.builds import (
    BUILD_CAPABILITIES,
    LABEL_BUILD_ID,
    LABEL_BUILD_SCOPE,
    BuildJob,
    BuildLimits,
    OutputLines,
    files_tar,
)
from corral.sandbox_manager.egress import EgressMount

BASE = "corral-sandbox:abc123"
JOB = BuildJob(
    build_id="build-0123456789ab",
    name="corral-build-test-0123456789ab",
    scope="test",
    base=BASE,
    tag="corral-env:0123456789ab",
    script="echo hi\n",
    egress=EgressMount(host_directory="/tmp/egress/build-0123456789ab"),
    limits=BuildLimits(memory="2g", nano_cpus=2_000_000_000, pids=1024),
    image_labels={"corral.image": "environment", "corral.image.base": BASE},
    files={"/usr/local/share/ca-certificates/corral-trusted-ca.crt": b"PEM"},
)


@pytest.fixture
def api() -> Iterator[docker.APIClient]:
    """A client that is never connected: it only formats the engine's request bodies."""
    client = docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    try:
        yield client
    finally:
        client.close()


# --- the build container -------------------------------------------------------------------------------
def test_the_build_container_has_no_network_but_its_egress_directory_mounted_read_only(
    api: docker.APIClient,
) -> None:
    host = JOB.host_config(api)
    assert host["NetworkMode"] == "none"
    assert host["Binds"] == ["/tmp/egress/build-0123456789ab:/run/corral/egress:ro"]


def test_the_build_container_keeps_only_the_capabilities_package_managers_need_and_is_limited(
    api: docker.APIClient,
) -> None:
    host = JOB.host_config(api)
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID"]
    assert set(BUILD_CAPABILITIES).isdisjoint({"SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_PTRACE", "MKNOD"})
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == 1024
    assert host["Memory"] == 2 * 1024**3 and host["MemorySwap"] == 2 * 1024**3
    assert host["NanoCpus"] == 2_000_000_000
    assert host["LogConfig"]["Type"] == "none"
    assert host["IpcMode"] == "private"
    assert "Privileged" not in host or host["Privileged"] is False


def test_the_exec_agent_runs_the_script_with_the_proxy_variables_and_relays_to_the_socket() -> None:
    config = json.loads(JOB.agent_config())
    assert config["build_script"] == "echo hi\n"
    assert config["egress_socket"] == "/run/corral/egress/proxy.sock"
    assert config["build_environment"] == {
        "HTTP_PROXY": "http://127.0.0.1:3128",
        "HTTPS_PROXY": "http://127.0.0.1:3128",
        "http_proxy": "http://127.0.0.1:3128",
        "https_proxy": "http://127.0.0.1:3128",
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "no_proxy": "localhost,127.0.0.1,::1",
        "DEBIAN_FRONTEND": "noninteractive",
    }


def test_build_containers_are_labelled_as_builds_of_their_scope_and_never_as_sandboxes() -> None:
    assert JOB.container_labels == {LABEL_BUILD_SCOPE: "test", LABEL_BUILD_ID: "build-0123456789ab"}
    assert not any(label.startswith("corral.managed") for label in JOB.container_labels)


def test_the_image_keeps_the_bases_env_and_cmd_runs_as_the_sandbox_user_and_blanks_the_build_labels() -> None:
    base = {"Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "Cmd": ["/bin/bash"], "User": "sandbox"}
    assert JOB.image_config(base) == {
        "User": "sandbox",
        "WorkingDir": "/workspace",
        "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
        "Cmd": ["/bin/bash"],
        "Labels": {
            "corral.image": "environment",
            "corral.image.base": BASE,
            LABEL_BUILD_SCOPE: "",
            LABEL_BUILD_ID: "",
        },
    }
    # without a Cmd of its own, the commit would take the build container's (the exec agent)
    assert JOB.image_config({"Env": None, "Cmd": None})["Cmd"] == ["/bin/bash"]


def test_files_are_put_at_their_absolute_paths() -> None:
    with tarfile.open(fileobj=io.BytesIO(files_tar(JOB.files))) as tar:
        [member] = tar.getmembers()
        assert member.name == "usr/local/share/ca-certificates/corral-trusted-ca.crt"
        assert member.mode == 0o644
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == b"PEM"


# --- output ----------------------------------------------------------------------------------------------
def frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def test_output_frames_become_lines_per_stream_whatever_the_chunking() -> None:
    data = frame(1, b"Reading package li") + frame(2, b"warning: x\n") + frame(1, b"sts...\nDone\n")
    data += frame(1, b"last line without newline")
    for size in (1, 3, 7, len(data)):
        lines = OutputLines()
        seen: list[str] = []
        for at in range(0, len(data), size):
            seen += lines.feed(data[at : at + size])
        assert seen == ["warning: x", "Reading package lists...", "Done"]
        assert lines.close() == ["last line without newline"]


def test_progress_redraws_terminal_line_ends_and_colours_keep_only_what_is_read() -> None:
    lines = OutputLines()
    data = b"(Reading database ... 5%\r(Reading database ... 100%\r(Reading database ... 10834 files.)\r\n"
    data += b"Removing jq ...\r\n\x1b[31mERROR: no such package\x1b[0m\n\n  \n"
    assert lines.feed(frame(1, data)) == [
        "(Reading database ... 10834 files.)",
        "Removing jq ...",
        "ERROR: no such package",
    ]


# --- the exec agent in build mode -------------------------------------------------------------------------
def run_agent(config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source(), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_build_mode_runs_the_script_strictly_and_exits_with_its_code() -> None:
    script = 'echo "to stdout $CORRAL_TEST"; echo "to stderr" >&2; false | true; echo never\nexit 9'
    done = run_agent({"build_script": script, "build_environment": {"CORRAL_TEST": "set"}})
    # pipefail: a failing command in a pipe fails the script, with its exit code
    assert done.returncode == 1
    assert done.stdout == "to stdout set\n" and done.stderr == "to stderr\n"
    assert run_agent({"build_script": "echo ok; exit 9"}).returncode == 9
    assert run_agent({"build_script": "kill -TERM $$"}).returncode == 128 + 15


def reserved_port() -> socket.socket:
    """A loopback port held for the agent: bound (port 0, the kernel's pick) but not listening, with
    ``SO_REUSEADDR``, so the agent's relay (which sets it too) can bind and listen on it while nothing
    else is handed it meanwhile, as a port probed and then let go could be."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    return holder


def read_head(conn: socket.socket) -> bytes:
    """Everything up to the end of an HTTP request's head (or what came before the peer hung up)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def test_build_mode_relays_the_proxy_port_to_the_egress_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "proxy.sock")
    received: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server, reserved_port() as holder:
        server.bind(path)
        server.listen(1)
        server.settimeout(30)

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(30)
                received.append(read_head(conn))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

        answering = threading.Thread(target=answer, daemon=True)
        answering.start()
        port = holder.getsockname()[1]
        script = (
            f"exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET http://deb.debian.org/ HTTP/1.1\\r\\n\\r\\n' >&3; cat <&3"
        )
        done = run_agent({"build_script": script, "egress_socket": path, "egress_port": port})
        answering.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n\nok")  # (text mode reads \r\n as \n)
    assert received == [b"GET http://deb.debian.org/ HTTP/1.1\r\n\r\n"]


def test_an_endless_line_is_cut_rather_than_held() -> None:
    lines = OutputLines()
    assert lines.feed(frame(1, b"50%\r" * 20_000)) == []  # redraws: only the last one is kept
    seen = lines.feed(frame(1, b"x" * 70_000))
    assert len(seen) == 1 and len(seen[0]) <= 64 * 1024
    assert lines.feed(frame(1, b"done\n")) == ["done"]
