"""Every benchmark of performance.md's B1..B7, each on its own private stack and next to its baseline
measured in the same run, then ``cluster`` (one NATS server next to a three-node cluster) and
``capacity`` (sessions per harness process), as one table; the figures are also written to
``bench/results/<date>.json``.

    uv run python bench/run.py [--quick] [--only B2 B5 cluster capacity] [--out DIR]

``--quick`` runs each benchmark on a small load (what ``make test`` runs: it shows every figure is
measured, not how good it is). A benchmark that fails leaves its figures out and the run exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from report import Figure, load, say, table

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Bench:
    benches: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]


BENCHES = (
    Bench("B1", "tool_loop.py", (), ("--sessions", "2", "--calls", "5")),
    Bench("B2", "core_flow.py", (), ("--sessions", "3", "--samples", "10", "--creates", "100")),
    Bench("B3 B4", "sandbox.py", (), ("--samples", "3", "--execs", "10")),
    Bench("B5", "idle_sessions.py", (), ("--sessions", "50", "--idle", "5")),
    Bench("B6", "long_session.py", ("--turns", "100"), ("--turns", "4", "--events", "500", "--kills", "1")),
    Bench("B7", "throughput.py", (), ("--clients", "4", "--seconds", "2", "--batch", "8")),
    # one NATS server next to a three-node cluster (R3), and how many sessions one harness carries
    Bench("cluster", "cluster.py", (), ("--samples", "5", "--creates", "30", "--writers", "4", "--seconds", "2")),
    Bench("capacity", "harness_capacity.py", (), ("--levels", "1", "4", "--seconds", "2")),
)


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    info = {"nproc": str(os.cpu_count() or 0), "kernel": platform.release(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    for row in lscpu.splitlines():
        key, _, value = row.partition(":")
        if key.strip() in ("Model name", "Hypervisor vendor", "Thread(s) per core"):
            info[key.strip()] = value.strip()
    meminfo = Path("/proc/meminfo").read_text().split()
    info["memory"] = f"{int(meminfo[1]) / 1024 / 1024:.1f} GiB"
    info["load average at start"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return info


def commit() -> str:
    answer = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE, check=False
    )
    return answer.stdout.strip() or "unknown"


def run_one(bench: Bench, quick: bool, workdir: Path) -> tuple[list[Figure], str | None, float]:
    """Run one bench module; its figures, why it failed (or None) and how long it took."""
    out = workdir / f"{bench.script}.json"
    args = bench.quick if quick else bench.full
    say(f"=== {bench.benches}: bench/{bench.script} {' '.join(args)}")
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, str(HERE / bench.script), *args, "--json", str(out)], check=False)
    took = time.perf_counter() - t0
    if result.returncode != 0:
        return [], f"bench/{bench.script} exited {result.returncode}", took
    if not out.exists():
        return [], f"bench/{bench.script} wrote no figures", took
    return load(out), None, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small load for each benchmark")
    parser.add_argument("--only", nargs="+", default=None, help="only these benchmarks (B1 .. B7, cluster, capacity)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="directory of the results file")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if args.only is None or set(args.only) & set(b.benches.split())]

    began = datetime.datetime.now(datetime.UTC)
    info = machine()
    figures: list[Figure] = []
    failures: list[str] = []
    durations: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="corral-bench-run-") as tmp:
        for bench in chosen:
            got, failed, took = run_one(bench, args.quick, Path(tmp))
            figures.extend(got)
            durations[bench.script] = round(took, 1)
            if failed:
                failures.append(failed)

    info["load average at end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    say("")
    say(f"Corral benchmarks, {'quick' if args.quick else 'full'} run, commit {commit()}, {began:%Y-%m-%d %H:%M} UTC")
    say(f"machine: {info['nproc']} cores, {info.get('Model name', '?')}, {info['memory']}, kernel {info['kernel']}")
    say(f"load average: {info['load average at start']} at the start, {info['load average at end']} at the end")
    say(table(figures))
    for figure in figures:
        if figure.note:
            say(f"  {figure.bench} {figure.name}: {figure.note}")
    for failure in failures:
        say(f"FAILED: {failure}")

    args.out.mkdir(parents=True, exist_ok=True)
    # a partial run is named for what it ran, so it never replaces the day's full run
    only = "".join(f"-{b}" for b in sorted(args.only)) if args.only else ""
    name = f"{began:%Y-%m-%d}{only}{'-quick' if args.quick else ''}.json"
    document = {
        "started": began.isoformat(timespec="seconds"),
        "commit": commit(),
        "quick": args.quick,
        "machine": info,
        "seconds_per_bench": durations,
        "failures": failures,
        "figures": [dataclasses.asdict(f) for f in figures],
    }
    (args.out / name).write_text(json.dumps(document, indent=1) + "\n")
    say(f"written: {args.out / name}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
