"""The embedded offline demo data set: 32x32 RGB shapes over textured backgrounds.

Every image holds one shape (6 kinds) in one colour (6 hues) at a random position,
size and slight rotation, over a background texture (6 kinds) in a dark or light
colour pair, plus pixel noise. The same images carry five labelings:

    shape          :  6 classes, the shape kind            (the target task)
    object         : 36 classes, shape x colour
    object_warmth  : 12 classes, shape x colour warmth
    object_size    : 18 classes, shape x size (radius third) (stand-in for ImageNet)
    scene          : 12 classes, background kind x tone    (stand-in for Places365)

so object // len(COLOURS) == object_warmth // 2 == object_size // 3 == shape. The demo's
object-like source learns object_size ("large star", "small ring"), a finer labeling than
the target's that says something the target's labels do not, about the shape itself: a
ResNet-8 trained 8 epochs on 40k images names the right shape on 97.3% of the held-out
images. (On object_warmth the same network named it on 96.6%, but warmth is a colour,
learnt without looking at the shape, and SSKT gained half as much from it.)

A sample is a pure function of (seed, split, sample id), so `offset` moves a split to
other ids (sources are trained on, e.g., ids 1_000_000.. while the target's 500
labelled images are ids 0..499) and a shorter split is a prefix of a longer one. The
test split ignores `offset`: every labeling and offset shares one held-out set, drawn
from its own random stream.

Difficulty is tuned (small shapes, low contrast, noise, look-alike textures such as
dots) so that a ResNet-20 trained from scratch on the 500 default target images
reaches roughly 80-85% shape accuracy after 60 epochs (3 seeds: 81-85%), leaving
room for transferred knowledge.

Generated arrays are cached under `<data.root>/procedural/`, keyed by everything
that determines the pixels (not by the labeling: all share one file).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from pipelines.datasets import DatasetError
from pipelines.datasets.base import ImageSet
from foundation.files import atomic_path

if TYPE_CHECKING:
    from pipelines.datasets.schema import ImageDataConfig

VERSION = 2  # bump whenever the pixels a (seed, split, id) produces change: it keys the cache
SIZE = 32
SHAPES = ["circle", "square", "triangle", "cross", "ring", "star"]
COLOURS = ["red", "yellow", "green", "cyan", "blue", "magenta"]  # hues 0, 60, ..., 300 degrees
BACKGROUNDS = ["hstripes", "vstripes", "checker", "dots", "clouds", "waves"]
TONES = ["dark", "light"]
DEFAULTS = {"label": "shape", "train_size": 500, "test_size": 2000, "seed": 0, "offset": 0}
SPLIT_CODES = {"train": 0, "test": 1}  # separate random streams: test ids never coincide with train ids
CHUNK = 1024  # samples rendered at once; bounds the float working set to ~100 MB

# Per-sample uniform draws, by position.
(U_SHAPE, U_COLOUR, U_BG, U_TONE, U_CX, U_CY, U_RADIUS, U_ANGLE, U_HUE, U_SAT, U_VAL,
 U_A_HUE, U_A_SAT, U_A_VAL, U_B_HUE, U_B_SAT, U_B_VAL, U_PERIOD, U_PHASE_X, U_PHASE_Y,
 U_WAVE_ANGLE, U_NOISE) = range(22)
CLOUD_GRID = 5
N_UNIFORM = 22 + CLOUD_GRID * CLOUD_GRID


def read_procedural(data_cfg: "ImageDataConfig", split: str) -> ImageSet:
    opts = parse_options(data_cfg.procedural)
    if split == "train":
        ids = np.arange(opts["offset"], opts["offset"] + opts["train_size"], dtype=np.int64)
    else:
        ids = np.arange(opts["test_size"], dtype=np.int64)
    arrays = load_or_generate(Path(data_cfg.root) / "procedural", opts["seed"], split, ids)
    labels, class_names = LABELINGS[opts["label"]](arrays)
    return ImageSet("procedural", split, labels.astype(np.int64), len(class_names), (SIZE, SIZE),
                    images=arrays["images"], class_names=class_names)


def parse_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise DatasetError(f"data.procedural: unknown option {unknown[0]!r}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **options}
    if opts["label"] not in LABELINGS:
        raise DatasetError(f"data.procedural.label: {opts['label']!r} is not one of {sorted(LABELINGS)}")
    for key in ("train_size", "test_size", "seed", "offset"):
        value = opts[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DatasetError(f"data.procedural.{key}: expected an integer >= 0, got {value!r}")
    return opts


# --- labelings: each maps the generated factors to (labels, class names) -----------------------

def _shape_labels(a: dict) -> tuple[np.ndarray, list[str]]:
    return a["shape"], list(SHAPES)


def _object_labels(a: dict) -> tuple[np.ndarray, list[str]]:
    return a["shape"] * len(COLOURS) + a["colour"], [f"{c} {s}" for s in SHAPES for c in COLOURS]


WARM = {"red", "yellow", "magenta"}  # the rest (green, cyan, blue) are cool


def _object_warmth_labels(a: dict) -> tuple[np.ndarray, list[str]]:
    warm = np.array([c in WARM for c in COLOURS])[a["colour"]]
    return a["shape"] * 2 + warm, [f"{w} {s}" for s in SHAPES for w in ("cool", "warm")]


SIZES = ["small", "medium", "large"]  # thirds of the radius range, 5..9 px


def _object_size_labels(a: dict) -> tuple[np.ndarray, list[str]]:
    return a["shape"] * len(SIZES) + a["size"], [f"{z} {s}" for s in SHAPES for z in SIZES]


def _scene_labels(a: dict) -> tuple[np.ndarray, list[str]]:
    return a["background"] * len(TONES) + a["tone"], [f"{b} {t}" for b in BACKGROUNDS for t in TONES]


# How many consecutive classes of a labeling share one shape kind (labelings that contain the shape).
CLASSES_PER_SHAPE = {"shape": 1, "object": len(COLOURS), "object_warmth": 2, "object_size": len(SIZES)}

LABELINGS: dict[str, Callable[[dict], tuple[np.ndarray, list[str]]]] = {
    "shape": _shape_labels, "object": _object_labels, "object_warmth": _object_warmth_labels,
    "object_size": _object_size_labels, "scene": _scene_labels,
}


# --- cache --------------------------------------------------------------------------------------

FIELDS = {"images": (np.uint8, (SIZE, SIZE, 3)), "shape": (np.int64, ()), "colour": (np.int64, ()),
          "background": (np.int64, ()), "tone": (np.int64, ()), "size": (np.int64, ())}


def load_or_generate(cache_dir: Path, seed: int, split: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    key = json.dumps({"version": VERSION, "seed": seed, "split": split, "first": int(ids[0]) if len(ids) else 0,
                      "count": len(ids)}, sort_keys=True)
    path = cache_dir / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    arrays = _load(path, len(ids))
    if arrays is None:
        arrays = generate(seed, split, ids)
        _save(path, arrays)
    return arrays


def _load(path: Path, count: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent or unreadable (then they are regenerated)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in FIELDS}
    except Exception:  # truncated zip, bad header, missing member: all mean "regenerate"
        return None
    for name, (dtype, shape) in FIELDS.items():
        if arrays[name].dtype != dtype or arrays[name].shape != (count, *shape):
            return None
    return arrays


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # tmp + rename: a concurrent reader (another rank) sees the old file or the whole new one.
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        warnings.warn(f"procedural: cannot cache into {path.parent} ({e}); images will be regenerated next time")


# --- generation -------------------------------------------------------------------------------

def generate(seed: int, split: str, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Images and their factors for the given sample ids; a sample depends only on (seed, split, id)."""
    n = len(ids)
    u = np.empty((n, N_UNIFORM), dtype=np.float32)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    noise = np.empty((min(n, CHUNK), SIZE, SIZE, 3), dtype=np.float32)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        for i in range(lo, hi):  # one stream per sample, so a sample is the same in any split length
            rng = np.random.default_rng([seed, SPLIT_CODES[split], int(ids[i])])
            u[i] = rng.random(N_UNIFORM)
            noise[i - lo] = rng.standard_normal((SIZE, SIZE, 3), dtype=np.float32)
        images[lo:hi] = render(u[lo:hi], noise[: hi - lo])
    return {"images": images,
            "shape": pick(u[:, U_SHAPE], len(SHAPES)), "colour": pick(u[:, U_COLOUR], len(COLOURS)),
            "background": pick(u[:, U_BG], len(BACKGROUNDS)), "tone": pick(u[:, U_TONE], len(TONES)),
            "size": pick(u[:, U_RADIUS], len(SIZES))}


def pick(u: np.ndarray, k: int) -> np.ndarray:
    """The kind index (0..k-1) of uniform draws in [0, 1): the one way the set turns a draw into a kind."""
    return np.minimum((u * k).astype(np.int64), k - 1)


def render(u: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """uint8 [n, SIZE, SIZE, 3] images from their draws: `u` float32 [n, N_UNIFORM] uniforms in [0, 1)
    (column U_SHAPE the shape kind, U_CX/U_CY/U_RADIUS its position and size, ...; the last
    CLOUD_GRID**2 the clouds' grid) and `noise` float32 [n, SIZE, SIZE, 3] standard normal pixel
    noise. A pure function: the image set draws both per sample, the video set per frame
    (pipelines/datasets/procedural_video.py) with the position moving along a path."""
    # Background: pattern t in [0, 1] blends the colour pair.
    t = _background(u)
    # Light pairs have values in 0.5..0.9, dark ones in 0.1..0.5.
    lo_val = np.where(pick(u[:, U_TONE], len(TONES)) == 1, np.float32(0.5), np.float32(0.1))
    colour_a = _hsv(u[:, U_A_HUE] * 360, u[:, U_A_SAT] * 0.7, lo_val + 0.4 * u[:, U_A_VAL])
    colour_b = _hsv(u[:, U_B_HUE] * 360, u[:, U_B_SAT] * 0.7, lo_val + 0.4 * u[:, U_B_VAL])
    img = colour_a[:, None, None, :] * (1 - t[..., None]) + colour_b[:, None, None, :] * t[..., None]

    # Shape: anti-aliased coverage over the background.
    alpha = _shape_coverage(u)
    hue = pick(u[:, U_COLOUR], len(COLOURS)) * 60.0 + (u[:, U_HUE] - 0.5) * 24  # +-12 degrees
    fg = _hsv(hue, 0.5 + 0.5 * u[:, U_SAT], 0.45 + 0.55 * u[:, U_VAL])
    img = img * (1 - alpha[..., None]) + fg[:, None, None, :] * alpha[..., None]

    sigma = (0.04 + 0.10 * u[:, U_NOISE])[:, None, None, None]
    img = img + sigma * noise
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _background(u: np.ndarray) -> np.ndarray:
    """Pattern t in [0, 1] per pixel, [n, SIZE, SIZE]; each kind computed only for its own rows."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    patterns = {
        "hstripes": lambda p, px, py, ang: np.sin(2 * np.pi * (yy / p + px)) > 0,
        "vstripes": lambda p, px, py, ang: np.sin(2 * np.pi * (xx / p + px)) > 0,
        "checker": lambda p, px, py, ang: (np.floor(2 * xx / p + px) + np.floor(2 * yy / p + py)) % 2,
        "dots": lambda p, px, py, ang: np.hypot((xx / p + px) % 1 - 0.5, (yy / p + py) % 1 - 0.5) < 0.3,
        "clouds": lambda p, px, py, ang: _clouds(u[rows]),
        "waves": lambda p, px, py, ang: 0.5 + 0.5 * np.sin(
            2 * np.pi * ((xx * np.cos(ang) + yy * np.sin(ang)) / p + px)),
    }
    kind = pick(u[:, U_BG], len(BACKGROUNDS))
    t = np.empty((len(u), SIZE, SIZE), dtype=np.float32)
    for k, name in enumerate(BACKGROUNDS):
        rows = kind == k
        if rows.any():
            p = (4 + 6 * u[rows, U_PERIOD])[:, None, None]  # 4..10 px
            a = u[rows, U_WAVE_ANGLE] * 60  # diagonal only (30..60 or 120..150 degrees): never like stripes
            ang = np.deg2rad(np.where(a < 30, 30 + a, 90 + a))[:, None, None]
            t[rows] = patterns[name](p, u[rows, U_PHASE_X, None, None], u[rows, U_PHASE_Y, None, None], ang)
    return t


def _clouds(u: np.ndarray) -> np.ndarray:
    """Smooth noise: a coarse random grid, bilinearly upsampled and stretched to [0, 1]."""
    grid = u[:, N_UNIFORM - CLOUD_GRID ** 2:].reshape(-1, CLOUD_GRID, CLOUD_GRID)
    pos = (np.arange(SIZE) + 0.5) / SIZE * (CLOUD_GRID - 1)
    lo = np.minimum(pos.astype(int), CLOUD_GRID - 2)
    w = pos - lo
    interp = np.zeros((SIZE, CLOUD_GRID), dtype=np.float32)
    interp[np.arange(SIZE), lo] = 1 - w
    interp[np.arange(SIZE), lo + 1] = w
    c = np.einsum("yi,nij,xj->nyx", interp, grid, interp)
    c -= c.min(axis=(1, 2), keepdims=True)
    return c / np.maximum(c.max(axis=(1, 2), keepdims=True), 1e-6)


# Signed distances (in units of the shape's radius; < 0 inside) in the shape's own frame:
# a to the right, w up. Edges are anti-aliased from these, so no supersampling is needed.
def _box(a, w, ha, hw):
    return np.maximum(np.abs(a) - ha, np.abs(w) - hw)


SDF = {
    "circle": lambda a, w: np.hypot(a, w) - 0.85,
    "square": lambda a, w: _box(a, w, 0.72, 0.72),
    "triangle": lambda a, w: np.maximum(-0.575 - w, (np.sqrt(3) * np.abs(a) + w - 1.15) / 2),
    "cross": lambda a, w: np.minimum(_box(a, w, 0.3, 0.95), _box(a, w, 0.95, 0.3)),
    "ring": lambda a, w: np.abs(np.hypot(a, w) - 0.725) - 0.225,
    "star": lambda a, w: np.hypot(a, w) - 0.4 - 0.6 * (0.5 + 0.5 * np.cos(5 * np.arctan2(a, w))) ** 2,
}


def _shape_coverage(u: np.ndarray) -> np.ndarray:
    """Fraction of each pixel covered by the sample's shape, [n, SIZE, SIZE]."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    kind = pick(u[:, U_SHAPE], len(SHAPES))
    alpha = np.empty((len(u), SIZE, SIZE), dtype=np.float32)
    for k, name in enumerate(SHAPES):
        rows = kind == k
        if not rows.any():
            continue
        radius = (5 + 4 * u[rows, U_RADIUS])[:, None, None]  # 5..9 px
        cx = radius + (SIZE - 2 * radius) * u[rows, U_CX, None, None]
        cy = radius + (SIZE - 2 * radius) * u[rows, U_CY, None, None]
        angle = np.deg2rad((u[rows, U_ANGLE, None, None] - 0.5) * 50)  # +-25 degrees
        dx, dy = (xx - cx) / radius, (yy - cy) / radius
        cos, sin = np.cos(angle), np.sin(angle)
        a, w = cos * dx + sin * dy, sin * dx - cos * dy  # image y grows downwards
        alpha[rows] = np.clip(0.5 - SDF[name](a, w) * radius, 0, 1)  # ~1 px wide edge ramp
    return alpha


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB in [0, 1], [n, 3], from per-sample hue in degrees and saturation, value in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + (h[:, None] % 360) / 60) % 6
    rgb = v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    return rgb.astype(np.float32)
