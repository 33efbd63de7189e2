"""The figures a bench measures, as structured records: each bench module collects ``Figure`` s,
prints them as one table and, with ``--json PATH``, writes them there for ``bench/run.py``."""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise SystemExit(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Figure:
    """One measured figure: ``value`` is the p50 for a latency, the rate or the size otherwise."""

    bench: str
    """``B1`` .. ``B7``; ``cluster`` or ``capacity`` (the capacity guide's figures); or ``extra`` for a
    figure that helps read them."""
    name: str
    value: float
    unit: str
    p99: float | None = None
    n: int | None = None
    baseline: float | None = None
    """The same figure for the baseline of this run (the system stripped out), in ``unit``."""
    baseline_name: str = ""
    target: str = ""
    cpu_ms_per_op: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds each stack process spent per operation while this figure was measured."""
    note: str = ""

    @classmethod
    def latency(
        cls,
        bench: str,
        name: str,
        samples_ms: list[float],
        *,
        baseline_ms: list[float] | None = None,
        baseline_name: str = "",
        **extra: Any,
    ) -> Figure:
        """p50/p99 of ``samples_ms``; the baseline's p50 next to it."""
        if not samples_ms:
            raise SystemExit(f"{bench} {name}: no samples")
        return cls(
            bench,
            name,
            pct(samples_ms, 0.5),
            "ms",
            p99=pct(samples_ms, 0.99),
            n=len(samples_ms),
            baseline=pct(baseline_ms, 0.5) if baseline_ms else None,
            baseline_name=baseline_name,
            **extra,
        )


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cpu_text(cpu: dict[str, float]) -> str:
    spent = sorted(((ms, name) for name, ms in cpu.items() if ms >= 0.005), reverse=True)
    return ", ".join(f"{name} {number(ms)}" for ms, name in spent)


def table(figures: list[Figure]) -> str:
    """One row per figure: benchmark, figure, value (p50 / p99), baseline, target, CPU ms per op."""
    head = ("bench", "figure", "value", "baseline", "target", "CPU ms/op by process")
    rows = [head]
    for f in figures:
        value = f"{number(f.value)} {f.unit}" + (f" (p99 {number(f.p99)})" if f.p99 is not None else "")
        value += f" n={f.n}" if f.n is not None else ""
        base = f"{number(f.baseline)} {f.unit} {f.baseline_name}" if f.baseline is not None else "-"
        rows.append((f.bench, f.name, value, base, f.target or "-", cpu_text(f.cpu_ms_per_op) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def finish(title: str, figures: list[Figure], json_path: Path | None) -> None:
    """Print ``figures`` as a table and write them to ``json_path`` when given."""
    say("")
    say(title)
    say(table(figures))
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(f) for f in figures], indent=1))


def load(path: Path) -> list[Figure]:
    return [Figure(**record) for record in json.loads(path.read_text())]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")
