"""Run every benchmark (or some), print the table, write benchmarks/results.json.

    python -m benchmarks                 the full run (about 25 minutes with the 10-minute soak)
    python -m benchmarks --quick         every benchmark, briefly (under half a minute)
    python -m benchmarks --only restore,toggle --soak-minutes 2 --kills 200

Each figure is measured with its baseline in the same run, over repeated runs, and
reported as median, p95 and p99; a target, where the issue sets one, is judged on the
statistic the table names.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from .common import Figure, Stats, machine_info
from .context import Context

#: Benchmark modules, in the order they run (the long soaks last).
BENCHMARKS = ("launch", "restore", "wake", "toggle", "ingest", "backfill_pace", "catchup", "roon", "history_data", "lag", "probes", "life", "memory", "kill9")
RESULTS = Path(__file__).resolve().parent / "results.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, short soaks: checks that everything runs")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--soak-minutes", type=float, help="minutes of demo for the memory soak (full: 10)")
    parser.add_argument("--kills", type=int, help="kill -9 count (full: 500)")
    parser.add_argument("--repeats", type=int, help="override every benchmark's number of repeated runs")
    parser.add_argument("--tmp-dir", type=Path, help="where scratch databases go (default: the system's)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--show", type=Path, metavar="RESULTS", help="print the table of an earlier results file, run nothing")
    parser.add_argument("-q", "--silent", action="store_true", help="no progress lines on stderr")
    return parser


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit in ("plays/s",):
        return f"{value:,.0f}"
    if unit == "count":
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def rows(figures: list[Figure]) -> list[list[str]]:
    table = [["figure", "unit", "median", "p95", "p99", "n", "baseline (median)", "×", "target", "met"]]
    for f in figures:
        ratio = f.ratio
        met = {True: "yes", False: "NO", None: ""}[f.met]
        if f.met is not None and f.judged_on not in ("median",):
            met += f" ({f.judged_on})"
        baseline = ""
        if f.baseline is not None and f.baseline.n:
            baseline = f"{_fmt(f.baseline.median, f.unit)} {f.baseline_name}".strip()
        table.append([
            f.name, f.unit, _fmt(f.value.median, f.unit), _fmt(f.value.p95, f.unit),
            _fmt(f.value.p99, f.unit), str(f.value.n), baseline,
            "" if ratio is None else f"{ratio:.2f}", f.target, met,
        ])
    return table


def render_text(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for index, row in enumerate(table):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def render_markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table[1:]]
    return "\n".join(lines)


def figures_from_json(path: Path) -> list[Figure]:
    def stats(data):
        return None if data is None else Stats(**data)

    figures = []
    for data in json.loads(path.read_text(encoding="utf-8"))["figures"]:
        data = {key: value for key, value in data.items() if key != "ratio"}
        data["value"], data["baseline"] = stats(data["value"]), stats(data["baseline"])
        figures.append(Figure(**data))
    return figures


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.show is not None:
        table = rows(figures_from_json(args.show))
        print(render_markdown(table) if args.markdown else render_text(table))
        return 0
    names = BENCHMARKS
    if args.only:
        names = tuple(name.strip() for name in args.only.split(",") if name.strip())
        unknown = set(names) - set(BENCHMARKS)
        if unknown:
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}",
                  file=sys.stderr)
            return 2
    ctx = Context(quick=args.quick, tmp_root=args.tmp_dir, soak_minutes=args.soak_minutes,
                  kills=args.kills, repeats=args.repeats, verbose=not args.silent)
    # The product's own log lines (an expected timeout, a retry) are not benchmark output.
    logging.getLogger().addHandler(logging.NullHandler())
    started = time.time()
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        if ctx.verbose:
            print(f"[{name}]", file=sys.stderr, flush=True)
        began = time.perf_counter()
        try:
            figures.extend(module.run(ctx))
        except Exception:
            errors[name] = traceback.format_exc()
            print(f"[{name}] FAILED\n{errors[name]}", file=sys.stderr, flush=True)
        timings[name] = time.perf_counter() - began

    table = rows(figures)
    print(render_markdown(table) if args.markdown else render_text(table))
    missed = [f.name for f in figures if f.met is False]
    print(f"\n{sum(f.met is True for f in figures)} targets met, {len(missed)} missed"
          + (f": {'; '.join(missed)}" if missed else "")
          + (f"; {len(errors)} benchmark(s) failed: {', '.join(errors)}" if errors else ""))

    results = {
        "mode": "quick" if args.quick else "full",
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.time() - started,
        "machine": machine_info(args.tmp_dir or Path(__import__("tempfile").gettempdir())),
        "options": {"soak_minutes": args.soak_minutes, "kills": args.kills, "repeats": args.repeats},
        "benchmark_seconds": timings,
        "figures": [figure.to_json() for figure in figures],
        "errors": errors,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
