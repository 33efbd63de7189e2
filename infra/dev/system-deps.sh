#!/usr/bin/env bash
# The two system packages Corral's local stack needs beyond Python: docker.io (the private Docker
# engine that runs sandboxes) and debootstrap (builds the sandbox base image offline). Installs them
# with apt-get when they are missing and this runs as root; otherwise says what to run. Nothing to do
# when both are present, or when sandboxes are off (CORRAL_DOCKER=0) or on an engine that runs
# elsewhere (CORRAL_DOCKER_HOST).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

if [[ "${CORRAL_DOCKER:-1}" == "0" || -n "${CORRAL_DOCKER_HOST:-}" ]]; then
    exit 0
fi
if command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "corral: dockerd and debootstrap are needed for sandboxes and are not installed." >&2
    echo "        Run as root: apt-get install -y docker.io debootstrap" >&2
    echo "        (or point CORRAL_DOCKER_HOST at a Docker engine, or run without sandboxes: CORRAL_DOCKER=0)" >&2
    exit 1
fi
echo "corral: installing docker.io and debootstrap with apt-get (once per machine) ..."
apt_log=$(mktemp)
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap; } \
    >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "corral: apt-get install -y docker.io debootstrap failed (output above)" >&2
    exit 1
fi
rm -f "$apt_log"
echo "corral: installed $(dockerd --version)"
