"""The offline video demo: procedural motion videos -> frame store -> a small 3D ResNet, scratch vs SSKT.

    python -m tools.demo_video --prepare configs/demo/video_sskt.yaml   (make train CONFIG=configs/demo/video_*.yaml)
    python -m tools.demo_video --seeds 0 1                               (make demo-video)

`--prepare` makes the config's frame store (`data.root`) if it is missing or stale: it writes
the procedural videos (pipelines/datasets/procedural_video.py: MPEG-4 AVIs in UCF-101's layout,
kept under <store folder>/videos/videos-<identity>/) and decodes them with tools/preprocess_video.py,
exactly as a real UCF-101 is prepared. Both steps resume after an interruption; the store (and a
partial one) is reused while a stamp beside it names the same videos and settings, else made again.

The table trains the config's target from scratch and with SSKT from the 2D demo sources (made by
`make demo-sources`, which `make demo-video` runs first; applied to the clips' middle frames through the source cache), same budget,
over several seeds, and writes mean +- std of the final clip and video accuracy to
runs/demo/video_table.md. Finished runs are reused: the SSKT rows are `make train`'s own runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from engine.config import ConfigError, load_config
from engine.trainer import train
from pipelines.datasets import procedural_video
from foundation.h5blocks import partial_path
from foundation.files import write_atomic
from tools import preprocess_video
from tools.reproduce import add_seeds_argument

BASE = "configs/demo/video_sskt.yaml"
SHORT_SIDE = 32  # the procedural frames' own size: stored as rendered, not resized
CLIP_LENGTH = 8  # videos shorter than this are flagged by the preprocessing (none here)
# The SSKT rows are the config's own runs (runs/demo/video_sskt/seed<k>: what `make train` trains).
VARIANTS = {"scratch": ["method={name: scratch}", "sources=[]", "run.name=demo/video_scratch"], "SSKT": []}


def prepare_store(store: Path, workers: int = 2, **generator_options) -> Path:
    """The frame store of the procedural video set at `store` (a .h5 path), made if missing or stale."""
    store = Path(store)
    opts = procedural_video.options(**generator_options)
    stamp = store.with_name(store.name + ".identity")
    wanted = json.dumps({"videos": procedural_video.identity(opts), "short_side": SHORT_SIDE,
                         "clip_length": CLIP_LENGTH}, sort_keys=True)
    current = stamp.read_text() if stamp.exists() else None
    if current == wanted and store.exists():  # the store gets its name only when complete
        return store
    if current != wanted:  # the store (or a partial one) was made from other videos: the preprocessing
        for path in (store, partial_path(store)):  # tool's own identity sees only their names and sizes
            path.unlink(missing_ok=True)
        write_atomic(stamp, wanted)  # names what the store at this path is made from, finished or not
    total = len(procedural_video.CLASSES) * opts["groups"] * opts["clips"]
    print(f"procedural videos: {total} MPEG-4 AVIs of {opts['frames']} frames "
          f"({len(procedural_video.CLASSES)} motion classes), seed {opts['seed']}", flush=True)
    root = procedural_video.ensure_videos(store.parent / "videos", **opts)
    status = preprocess_video.main(["--dataset", "ucf101", "--root", str(root), "--out", str(store),
                                    "--short-side", str(SHORT_SIDE), "--clip-length", str(CLIP_LENGTH),
                                    "--workers", str(workers)])
    if status != preprocess_video.EXIT_OK:
        raise RuntimeError(f"preprocessing {root} into {store} failed (exit status {status})")
    return store


def run_table(seeds: list[int], extra: list[str]) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        for name, overrides in VARIANTS.items():
            cfg = load_config(BASE, [*overrides, f"seed={seed}", *extra])
            prepare_store(cfg.data.root)
            summary = train(cfg)
            for metric, value in final_accuracies(summary).items():
                results.setdefault(name, {}).setdefault(metric, []).append(value)
    return results


def final_accuracies(summary: dict) -> dict[str, float]:
    """Clip and video accuracy (%) of the last evaluation, by the names the summary gives them."""
    final = summary["final"]
    chosen = {key: value for key, value in final.items() if "top1" in key and isinstance(value, (int, float))}
    if not chosen:
        raise KeyError(f"summary.json has no top-1 metric in its final evaluation: {sorted(final)}")
    return chosen


def markdown_table(results: dict[str, dict[str, list[float]]], seeds: list[int]) -> str:
    metrics = list(next(iter(results.values())))
    head = " | ".join(f"{m} (mean ± std, {len(seeds)} seeds)" for m in metrics)
    lines = [f"| setting | {head} |", "|---" * (len(metrics) + 1) + "|"]
    for name, values in results.items():
        cells = []
        for m in metrics:
            mean = statistics.mean(values[m])
            std = statistics.stdev(values[m]) if len(values[m]) > 1 else 0.0
            delta = "" if name == "scratch" else f" ({mean - statistics.mean(results['scratch'][m]):+.1f})"
            cells.append(f"{mean:.1f} ± {std:.1f}{delta}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", metavar="CONFIG", help="only make CONFIG's frame store (if missing or stale)")
    add_seeds_argument(parser, [0, 1], "the seeds of each row (default 0 1)")
    parser.add_argument("overrides", nargs="*", help="applied to every run, e.g. train.epochs=2")
    args = parser.parse_args(argv)
    if args.prepare:
        try:
            store = prepare_store(load_config(args.prepare, args.overrides).data.root)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"procedural video frame store: {store}")
        return 0
    table = markdown_table(run_table(args.seeds, args.overrides), args.seeds)
    out = Path("runs/demo/video_table.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, table)
    print(table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
