"""The demo's version of the paper's I / P / P+I table, on the embedded procedural set.

    python -m tools.demo --seeds 0 1        (make demo)

Trains the target from scratch and with SSKT from each source set (object-like
"I", scene-like "P", both "P+I"), with linear heads and with transfer modules,
all with the same budget, over several seeds; prints mean +- std of the final
top-1 and writes the table to runs/demo/table.md. Finished runs are reused.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import yaml

from engine.config import load_config
from engine.train import train
from tools.demo_sources import ensure_demo_sources

BASE = "configs/demo/sskt_PI.yaml"  # holds both demo sources; variants keep a subset
SOURCE_SETS = {"I": ["object"], "P": ["scene"], "P+I": ["scene", "object"]}


def variants(base_sources: list[dict]) -> dict[str, list[str]]:
    by_name = {s["name"]: s for s in base_sources}
    table = {"scratch": ["method.name=scratch", "sources=[]"]}
    for label, names in SOURCE_SETS.items():
        chosen = yaml.safe_dump([by_name[n] for n in names], default_flow_style=True, width=10_000).strip()
        for head, head_label in (("linear", "linear"), ("transfer_module", "TM")):
            table[f"SSKT {label}, {head_label}"] = [f"sources={chosen}", f"model.head={head}"]
    return table


def run_all(seeds: list[int], extra: list[str]) -> dict[str, list[float]]:
    base_sources = yaml.safe_load(Path(BASE).read_text())["sources"]
    results = {}
    for name, overrides in variants(base_sources).items():
        slug = name.lower().replace("sskt ", "sskt_").replace(", ", "_").replace("+", "")
        for seed in seeds:
            cfg = load_config(BASE, [*overrides, f"seed={seed}", f"run.name=demo/table/{slug}", *extra])
            summary = train(cfg)
            results.setdefault(name, []).append(summary["final"][summary["metric"]])
    return results


def markdown_table(results: dict[str, list[float]], seeds: list[int]) -> str:
    scratch = statistics.mean(results["scratch"])
    lines = [f"| setting | top-1 % (mean ± std over {len(seeds)} seeds) | vs scratch |", "|---|---|---|"]
    for name, values in results.items():
        mean = statistics.mean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        delta = "" if name == "scratch" else f"{mean - scratch:+.1f}"
        lines.append(f"| {name} | {mean:.1f} ± {std:.1f} | {delta} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("overrides", nargs="*", help="applied to every run, e.g. train.epochs=10")
    args = parser.parse_args(argv)
    ensure_demo_sources()
    results = run_all(args.seeds, args.overrides)
    table = markdown_table(results, args.seeds)
    out = Path("runs/demo/table.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
