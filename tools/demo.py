"""The demo's version of the paper's comparison table, on the embedded procedural set.

    python -m tools.demo --seeds 0 1 2 [key=value ...]        (make demo SEEDS="0 1 2" ARGS="...")
    python -m tools.demo --rows scratch "SSKT I, linear"      (some rows only, in the table's order)

The table is data: tools/demo_table.yaml lists its rows, each a config plus
overrides (scratch, SSKT with each stand-in source set and head; KD / DML rows are
added there the same way). Every row runs over the same seeds with the same
budget; the table shows the mean and std of the final top-1 and the difference to
the baseline row, and is written to <run folder>/table.md. Finished runs are reused,
interrupted ones resumed.

Overrides given on the command line apply to every run. Those that change what a
run computes (e.g. train.epochs=5 for a quick trial) send the whole table to its
own folder, runs/demo/trial-<hash>/, so a later full table never resumes a trial.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engine.config import ConfigError, load_config
from engine.train import train
from tools.demo_sources import check_committed_sources

TABLE = Path("tools/demo_table.yaml")
RUNS = "demo/table"
# Overrides that do not change what a run computes; anything else makes a trial.
NEUTRAL_KEYS = {"train.progress", "data.workers"}


@dataclass
class Row:
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


@dataclass
class Table:
    rows: list[Row]
    baseline: str

    @classmethod
    def load(cls, path: Path = TABLE) -> "Table":
        if not Path(path).is_file():
            raise ConfigError(f"{path}: table file not found")
        raw = yaml.safe_load(Path(path).read_text())
        if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list) or not raw["rows"]:
            raise ConfigError(f"{path}: expected a mapping with a non-empty list `rows`")
        rows = []
        for i, item in enumerate(raw["rows"]):
            if not isinstance(item, dict) or set(item) - {"name", "config", "overrides"} or \
                    not {"name", "config"} <= set(item):
                raise ConfigError(f"{path}: rows.{i}: expected keys name, config and optionally overrides")
            rows.append(Row(str(item["name"]), str(item["config"]), [str(o) for o in item.get("overrides") or []]))
        slugs = [r.slug for r in rows]
        if len(set(slugs)) != len(slugs):
            raise ConfigError(f"{path}: row names must differ (after lower-casing): {[r.name for r in rows]}")
        baseline = str(raw.get("baseline", rows[0].name))
        if baseline not in {r.name for r in rows}:
            raise ConfigError(f"{path}: baseline {baseline!r} is not a row name")
        return cls(rows, baseline)

    def select(self, names: list[str]) -> "Table":
        """The named rows only, in the table's order (the baseline keeps its name for the deltas)."""
        unknown = [n for n in names if n not in {r.name for r in self.rows}]
        if unknown:
            raise ConfigError(f"--rows: {unknown[0]!r} is not a row of the table; rows: {[r.name for r in self.rows]}")
        return Table([r for r in self.rows if r.name in names], self.baseline)


def runs_folder(extra: list[str]) -> str:
    """demo/table for the full table; demo/trial-<hash> when the overrides change what runs compute."""
    changing = sorted(o for o in extra if o.partition("=")[0] not in NEUTRAL_KEYS)
    if not changing:
        return RUNS
    return f"demo/trial-{hashlib.sha256(chr(10).join(changing).encode()).hexdigest()[:8]}"


def run_all(table: Table, seeds: list[int], extra: list[str]) -> dict[str, list[float]]:
    folder = runs_folder(extra)
    results: dict[str, list[float]] = {}
    for row in table.rows:
        for seed in seeds:
            cfg = load_config(row.config, [*row.overrides, f"seed={seed}", f"run.name={folder}/{row.slug}", *extra])
            summary = train(cfg)
            results.setdefault(row.name, []).append(summary["final"][summary["metric"]])
    return results


def markdown_table(results: dict[str, list[float]], baseline: str) -> str:
    counts = {len(v) for v in results.values()}
    n = counts.pop() if len(counts) == 1 else None
    if n == 1:
        header = "top-1 % (1 seed)"
    elif n:
        header = f"top-1 % (mean ± std over {n} seeds)"
    else:
        header = "top-1 % (mean ± std; seeds per row differ)"
    base = statistics.mean(results[baseline]) if results.get(baseline) else None
    lines = [f"| setting | {header} | vs {baseline} |", "|---|---|---|"]
    for name, values in results.items():
        mean = statistics.mean(values)
        cell = f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {statistics.stdev(values):.1f}"
        if n is None:
            cell += f" ({len(values)} seed{'s' if len(values) > 1 else ''})"
        delta = "" if name == baseline or base is None else f"{mean - base:+.1f}"
        lines.append(f"| {name} | {cell} | {delta} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--table", type=Path, default=TABLE, help="rows: name, config, overrides")
    parser.add_argument("--rows", nargs="+", metavar="NAME", help="run these rows only (default: all)")
    parser.add_argument("overrides", nargs="*", help="applied to every run, e.g. train.epochs=10")
    args = parser.parse_args(argv)
    try:
        table = Table.load(args.table)
        if args.rows:
            table = table.select(args.rows)
        check_committed_sources()
        results = run_all(table, args.seeds, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = markdown_table(results, table.baseline)
    out = Path("runs") / runs_folder(args.overrides) / "table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
