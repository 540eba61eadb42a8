"""The offline video demo's data: procedural motion videos -> frame store, made once per config.

    python -m tools.demo_video --prepare configs/demo/video_sskt.yaml [key=value ...]   (make demo-video-data)

Makes the config's frame store (`data.root`) if it is missing or stale, from the procedural video
generator (pipelines/datasets/procedural_video.py) with the options the config gives in
`data.procedural` (its data seed `seed`, `groups`, `clips`, `frames`, `own_shape`, ...; the
generator's defaults for the rest): it writes the videos (MPEG-4 AVIs in UCF-101's layout, kept under
<store folder>/videos/videos-<identity>/) and decodes them with tools/preprocess_video.py, exactly as
a real UCF-101 is prepared. Both steps resume after an interruption; the store (and a partial one) is
reused while a stamp beside it names the same videos and settings, else made again. `make train` with
a configs/demo/video_* config and `make demo-video` run it first.

The demo's table (scratch vs SSKT, several seeds) is tables/demo_video.yaml: `make demo-video` runs
its cells with tools/reproduce.py and tabulates them with tools/results.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.config import ConfigError, load_config
from pipelines.datasets import procedural_video
from pipelines.datasets.procedural import SIZE
from foundation.h5blocks import partial_path
from foundation.files import write_atomic
from tools import preprocess_video

CLIP_LENGTH = 8  # videos shorter than this are flagged by the preprocessing (none here)


def prepare_store(store: Path, workers: int = 2, **generator_options) -> Path:
    """The frame store of the procedural video set at `store` (a .h5 path), made if missing or stale."""
    store = Path(store)
    opts = procedural_video.options(**generator_options)
    stamp = store.with_name(store.name + ".identity")
    short_side = SIZE * opts["upscale"]  # the videos' own size: stored as written, not resized
    wanted = json.dumps({"videos": procedural_video.identity(opts), "short_side": short_side,
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
          f"({len(procedural_video.CLASSES)} motion classes), data seed {opts['seed']}", flush=True)
    root = procedural_video.ensure_videos(store.parent / "videos", **opts)
    status = preprocess_video.main(["--dataset", "ucf101", "--root", str(root), "--out", str(store),
                                    "--short-side", str(short_side), "--clip-length", str(CLIP_LENGTH),
                                    "--workers", str(workers)])
    if status != preprocess_video.EXIT_OK:
        raise RuntimeError(f"preprocessing {root} into {store} failed (exit status {status})")
    return store


def prepare_config(config: str | Path, overrides: list[str] = ()) -> Path:
    """The frame store a video demo config trains on (`data.root`), made from its `data.procedural` options."""
    cfg = load_config(config, list(overrides))
    if cfg.data.dataset != "frames":
        raise ConfigError(f"{config}: data.dataset: the procedural videos are read as `frames`, not "
                          f"{cfg.data.dataset!r}")
    return prepare_store(cfg.data.root, **cfg.data.procedural)  # the schema has checked the options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", metavar="CONFIG", required=True,
                        help="make CONFIG's frame store (data.root) from its data.procedural options, "
                             "if missing or stale")
    parser.add_argument("overrides", nargs="*", help="applied to the config, e.g. data.procedural.seed=1")
    args = parser.parse_args(argv)
    try:
        store = prepare_config(args.prepare, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"procedural video frame store: {store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
