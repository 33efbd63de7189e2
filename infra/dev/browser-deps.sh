#!/usr/bin/env bash
# The browser the console's end-to-end test drives: Debian's chromium (Playwright runs it headless;
# the playwright package's own browser downloads are not used). Installs it with apt-get when it is
# missing and this runs as root; otherwise says what to run. Only `make test` needs it.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "corral: chromium is needed for the console's browser test and is not installed." >&2
    echo "        Run as root: apt-get install -y chromium" >&2
    exit 1
fi
echo "corral: installing chromium with apt-get (once per machine) ..."
apt_log=$(mktemp)
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "corral: apt-get install -y chromium failed (output above)" >&2
    exit 1
fi
rm -f "$apt_log"
echo "corral: installed $(chromium --version 2>/dev/null)"
