"""The offline video demo's data: the procedural shapes (pipelines/datasets/procedural.py) moving
over their textures, written as real videos in UCF-101's layout.

Every video shows one shape (6 kinds) over a static background texture (6 kinds), rendered frame
by frame by the 2D set's own renderer at 32x32. The action class is the motion, chosen to survive
a horizontal flip (the clip views flip):

    Rise      moves up                      Shake     oscillates left-right, 3-4 times
    Fall      moves down                    Orbit     circles the centre, either sense
    Slide     moves sideways, either way    Approach  grows (comes closer) in place

Paths are randomised (start, travel, speed, drift) so that a single frame's position and size
say almost nothing about the class; only the motion does. Optionally, in a share `subtle_motion`
of the videos the motion is subtle: the path keeps its form and centre at a tenth of its extent
(about a pixel), as real clips often show their action with little movement. As in real action
data (rowing and water, riding and horses), the actor and the scene go with the action without
deciding it: each action has its own shape kind and its own background kind (OWN_SHAPE,
OWN_BACKGROUND), shown in a share `own_shape` (`own_background`) of its videos, any other kind
uniformly in the rest; a shape or background kind alone then points to its action more often than
not, but only the motion is always right. With `actor="shape_colour"` the own actor is a fine-grained
kind instead: one of the action's six (shape, colour) pairs (ACTORS), which only a viewer that tells
both apart can name. Other colours, tones and textures' details stay independent of the class. With
`group_look` every video of a group shows the same look (actor kind, colours, texture, background), as a
UCF-101 group's clips show one person in one scene; only the path and the pixel noise change from clip
to clip. Pixel noise is partly static, partly fresh each frame, as a camera's.

    write_ucf101(root, seed=0, groups=25, clips=8, frames=16, actor="shape", own_shape=0.75,
                 own_background=0.5, subtle_motion=0.0, group_look=False)

writes `<root>/<Class>/v_<Class>_gXX_cYY.avi` (MPEG-4 Part 2 in AVI, as UCF-101 ships) and
`<root>/ucfTrainTestlist/` (classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt) for
tools/preprocess_video.py. Split k tests a block of groups, as the official lists do (25 groups:
1-7, 8-14, 15-21; fewer groups: proportionally smaller blocks). A video is a pure function of
(seed, class, group, clip) and the options, so `seed` draws another set of the same design; every
file is written atomically (a killed run leaves no half video and continues where it stopped), and
`ensure_videos` keeps the set under a folder named by its identity (VERSION and every option), so a
changed generator never reuses old files.
"""
from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.datasets.procedural import (BACKGROUNDS, COLOURS, N_UNIFORM, SHAPES, SIZE, U_ANGLE, U_BG, U_COLOUR, U_CX,
                                           U_CY, U_RADIUS, U_SHAPE, pick, render)
from foundation.files import atomic_path, write_atomic

VERSION = 2  # bump whenever the bytes a (seed, class, group, clip) produces change: it names the cache
CLASSES = ["Rise", "Fall", "Slide", "Shake", "Orbit", "Approach"]
# Each action's own actor and scene, as rowing goes with water: a video shows its class's own shape kind
# with probability `own_shape` (else one of the other five, uniformly), and independently its own
# background kind with probability `own_background`.
OWN_SHAPE = {"Rise": "triangle", "Fall": "circle", "Slide": "square", "Shake": "cross", "Orbit": "ring",
             "Approach": "star"}
OWN_BACKGROUND = {"Rise": "clouds", "Fall": "vstripes", "Slide": "hstripes", "Shake": "checker", "Orbit": "dots",
                  "Approach": "waves"}
# The video demo's design (configs/demo/video_*.yaml give the design's options explicitly; actor, subtle_motion,
# upscale and group_look are measured variants, docs/demo.md#video-demo).
DEFAULTS = {"seed": 0, "groups": 25, "clips": 8, "frames": 16, "qscale": 4, "upscale": 1, "actor": "shape",
            "own_shape": 0.75, "own_background": 0.5, "subtle_motion": 0.0, "group_look": False}
# What makes an action's own actor: "shape", its own shape kind (OWN_SHAPE); "shape_colour", a fine-grained
# kind: the six (shape, colour) pairs with (shape + colour) % 6 == the class, one of each shape and each colour,
# so that neither the shape nor the colour alone says anything of the class, only the pair does.
ACTORS = ("shape", "shape_colour")
SHARES = ("own_shape", "own_background", "subtle_motion")  # the design's shares, each in [0, 1]
# The options that decide what a video shows (the rest: how many, how stored).
DESIGN = ("actor", *SHARES, "group_look")
SUBTLE_EXTENT = 0.1  # a subtle motion's extent, as a share of its path's usual extent
FPS = 25
OFFICIAL_GROUPS, OFFICIAL_TEST_BLOCK = 25, 7  # UCF-101: split k tests groups 7(k-1)+1 .. 7k
STATIC_NOISE = 0.8  # share of the pixel noise's variance that stays the same in every frame
MARKER = "complete.json"


# ---------------------------------------------------------------- motion

def motion_path(label: int, frames: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-frame shape position and size, [frames] each, in the 2D renderer's units: cx, cy and
    radius in [0, 1] (0: left/top edge or smallest, 1: right/bottom edge or largest)."""
    p = np.linspace(0.0, 1.0, frames)
    x0, y0, size = rng.random(3)
    drift = rng.uniform(-0.1, 0.1)  # slow motion across the main one, so no path is a pure axis
    travel = rng.uniform(0.55, 0.9)
    sign = rng.choice([-1.0, 1.0])
    name = CLASSES[label]
    if name in ("Rise", "Fall"):
        start = rng.uniform(travel, 1.0) if name == "Rise" else rng.uniform(0.0, 1.0 - travel)
        cy = start + (-travel if name == "Rise" else travel) * p
        cx, radius = _drift(x0, drift, p), np.full(frames, size)
    elif name == "Slide":
        start = rng.uniform(0.0, 1.0 - travel)
        cx = start + travel * p
        cx = cx if sign > 0 else 1.0 - cx
        cy, radius = _drift(y0, drift, p), np.full(frames, size)
    elif name == "Shake":
        amplitude = rng.uniform(0.25, 0.45)
        centre = 0.5 + rng.uniform(-1, 1) * (0.5 - amplitude)
        cx = centre + amplitude * np.sin(2 * np.pi * (rng.uniform(3.0, 4.0) * p + rng.random()))
        cy, radius = _drift(y0, drift, p), np.full(frames, size)
    elif name == "Orbit":
        r = rng.uniform(0.3, 0.5)
        angle = 2 * np.pi * (rng.random() + sign * rng.uniform(0.75, 1.0) * p)
        cx, cy = 0.5 + r * np.cos(angle), 0.5 + r * np.sin(angle)
        radius = np.full(frames, size)
    elif name == "Approach":
        grow = rng.uniform(0.6, 1.0)
        start = rng.uniform(0.0, 1.0 - grow)
        radius = start + grow * p
        cx, cy = _drift(x0, drift, p), _drift(y0, drift, p)
    else:
        raise ValueError(f"no motion for class {label}")
    return {"cx": np.clip(cx, 0, 1), "cy": np.clip(cy, 0, 1), "radius": np.clip(radius, 0, 1)}


def _drift(start: float, drift: float, p: np.ndarray) -> np.ndarray:
    return np.clip(start, abs(drift), 1 - abs(drift)) + drift * (p - 0.5) * 2


def subtle(path: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same motion at SUBTLE_EXTENT of its extent, around the path's mean position and size."""
    return {key: v.mean() + SUBTLE_EXTENT * (v - v.mean()) for key, v in path.items()}


def nuisance_kind(own: int, share: float, count: int, rng: np.random.Generator) -> int:
    """`own` with probability `share`, else one of the other `count - 1` kinds, uniformly."""
    if rng.random() < share:
        return own
    return int((own + 1 + rng.integers(count - 1)) % count)


def fine_grained_kind(label: int, share: float, rng: np.random.Generator) -> tuple[int, int]:
    """(shape, colour): with probability `share` one of the class's own six pairs ((shape + colour) % 6 ==
    label), else one of the other thirty, uniformly."""
    shape = int(rng.integers(len(SHAPES)))
    owner = label if rng.random() < share else (label + 1 + rng.integers(len(CLASSES) - 1)) % len(CLASSES)
    return shape, int(owner - shape) % len(COLOURS)


def video_factors(seed: int, label: int, group: int, clip: int, frames: int, actor: str = DEFAULTS["actor"],
                  own_shape: float = DEFAULTS["own_shape"], own_background: float = DEFAULTS["own_background"],
                  subtle_motion: float = DEFAULTS["subtle_motion"], group_look: bool = DEFAULTS["group_look"]
                  ) -> tuple[dict, np.ndarray, np.random.Generator]:
    """The video's factors (shape, colour and background kind, whether its motion is subtle, path), the 2D
    renderer's per-frame draws float32 [frames, N_UNIFORM], and the generator whose next draws are its
    pixel noise."""
    rng = np.random.default_rng([seed, label, group, clip])
    # The look (actor, colours, texture, background) is drawn per video, or per group with group_look: as a
    # UCF-101 group's clips show one person in one scene.
    look = np.random.default_rng([seed, label, group]) if group_look else rng
    u = np.tile(look.random(N_UNIFORM, dtype=np.float32), (frames, 1))  # the 2D set's draws: shape, colours, texture
    name = CLASSES[label]
    if actor == "shape":
        shape = nuisance_kind(SHAPES.index(OWN_SHAPE[name]), own_shape, len(SHAPES), look)
    else:
        shape, colour = fine_grained_kind(label, own_shape, look)
        u[:, U_COLOUR] = (colour + 0.5) / len(COLOURS)
    background = nuisance_kind(BACKGROUNDS.index(OWN_BACKGROUND[name]), own_background, len(BACKGROUNDS), look)
    u[:, U_SHAPE], u[:, U_BG] = (shape + 0.5) / len(SHAPES), (background + 0.5) / len(BACKGROUNDS)
    path = motion_path(label, frames, rng)
    is_subtle = subtle_motion > 0 and bool(rng.random() < subtle_motion)  # no draw at 0: other draws unchanged
    path = subtle(path) if is_subtle else path
    u[:, U_CX], u[:, U_CY], u[:, U_RADIUS] = path["cx"], path["cy"], path["radius"]
    u[:, U_ANGLE] = u[0, U_ANGLE] + np.linspace(0, rng.uniform(-0.2, 0.2), frames)  # a slight turn: nuisance
    colour = int(pick(u[0, U_COLOUR], len(COLOURS)))  # the colour kind the renderer draws
    return {"shape": shape, "colour": colour, "background": background, "subtle": is_subtle, **path}, u, rng


def render_video(seed: int, label: int, group: int, clip: int, frames: int, **design
                 ) -> tuple[np.ndarray, dict]:
    """uint8 [frames, 32, 32, 3] and the video's factors (video_factors, with the actor and SHARES given or
    their defaults); a pure function of its arguments."""
    factors, u, rng = video_factors(seed, label, group, clip, frames, **design)
    static = rng.standard_normal((1, SIZE, SIZE, 3), dtype=np.float32)
    fresh = rng.standard_normal((frames, SIZE, SIZE, 3), dtype=np.float32)
    noise = np.sqrt(STATIC_NOISE) * static + np.sqrt(1 - STATIC_NOISE) * fresh
    return render(u, noise), factors


# ---------------------------------------------------------------- files

def video_name(label: int, group: int, clip: int) -> str:
    """UCF-101's path of a video under the root, e.g. Rise/v_Rise_g08_c01.avi."""
    cls = CLASSES[label]
    return f"{cls}/v_{cls}_g{group:02d}_c{clip:02d}.avi"


def parse_name(name: str) -> tuple[int, int, int]:
    """(label, group, clip) of a video_name, with or without its .avi (a frame store keeps it without)."""
    stem = name.split("/")[-1].removesuffix(".avi")
    _, cls, group, clip = stem.split("_")
    return CLASSES.index(cls), int(group[1:]), int(clip[1:])


def tested_groups(groups: int, split: int) -> range:
    """Groups that split k (1..3) tests: the official blocks of 7 for 25 groups, scaled for fewer."""
    block = max(1, round(groups * OFFICIAL_TEST_BLOCK / OFFICIAL_GROUPS))
    return range((split - 1) * block + 1, min(split * block, groups) + 1)


def enlarge(pixels: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, factor H, factor W, 3], each pixel a factor x factor square. MPEG-4 and the
    frame store's JPEGs keep colour at half resolution (4:2:0) and quantise 8x8 blocks: at 32x32 that blurs a
    shape's outline and colour into its background. Enlarged 2x and resized back to 32 by the clip loader,
    the stored frames keep it (docs/demo.md#video-demo: the object-like source names the true shape in 84%
    of the shipped set's training clips, in 96% enlarged 2x, in 97% of rendered images)."""
    return pixels if factor == 1 else pixels.repeat(factor, axis=1).repeat(factor, axis=2)


def write_avi(path: Path, pixels: np.ndarray, qscale: int = 4) -> None:
    """MPEG-4 Part 2 in AVI at a fixed quantiser (ffmpeg's -q:v), published atomically."""
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="avi") as container:
            stream = container.add_stream("mpeg4", rate=Fraction(FPS))
            stream.height, stream.width = pixels.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.qmin = stream.codec_context.qmax = qscale
            stream.codec_context.thread_count = 1  # one thread: the same bytes on every machine with this libav
            for image in pixels:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())


def split_lists(groups: int, clips: int) -> dict[str, str]:
    """The contents of ucfTrainTestlist/'s files, as UCF-101 writes them (1-based class indices)."""
    files = {"classInd.txt": "".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES))}
    for k in (1, 2, 3):
        tested = set(tested_groups(groups, k))
        train, test = [], []
        for label in range(len(CLASSES)):
            for group in range(1, groups + 1):
                for clip in range(1, clips + 1):
                    name = video_name(label, group, clip)
                    (test.append(f"{name}\n") if group in tested else train.append(f"{name} {label + 1}\n"))
        files[f"trainlist0{k}.txt"], files[f"testlist0{k}.txt"] = "".join(train), "".join(test)
    return files


def write_ucf101(root: Path, seed: int = 0, groups: int = 25, clips: int = 8, frames: int = 16,
                 qscale: int = 4, upscale: int = 1, progress=None, **design) -> list[Path]:
    """Every video and the split files under `root`; a video already on disk is kept (resume). Each video
    is written at `upscale` times its rendered size (enlarge). `design`: actor, own_shape, own_background,
    subtle_motion, group_look, their defaults where not given."""
    opts = options(seed=seed, groups=groups, clips=clips, frames=frames, qscale=qscale, upscale=upscale, **design)
    design = {key: opts[key] for key in DESIGN}
    root = Path(root)
    for name, text in split_lists(groups, clips).items():
        write_atomic(root / "ucfTrainTestlist" / name, text)
    paths = []
    for label in range(len(CLASSES)):
        for group in range(1, groups + 1):
            for clip in range(1, clips + 1):
                path = root / video_name(label, group, clip)
                if not path.exists():  # written atomically: present means complete
                    pixels, _ = render_video(seed, label, group, clip, frames, **design)
                    write_avi(path, enlarge(pixels, upscale), qscale)
                paths.append(path)
                if progress is not None:
                    progress(len(paths))
    return paths


# Each integer option's least and greatest value (groups: one block of test groups per official split, and
# two digits in the names, as clips).
INTEGER_RANGES = {"seed": (0, None), "groups": (3, 99), "clips": (1, 99), "frames": (2, None), "qscale": (1, 31),
                  "upscale": (1, 8)}


def options(**given) -> dict:
    """Every option, the defaults filled in; a ValueError names an unknown option or a value out of range."""
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(DEFAULTS))}")
    opts = {**DEFAULTS, **given}
    for key, (least, most) in INTEGER_RANGES.items():
        value = opts[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least or (most and value > most):
            span = f"{least}..{most}" if most else f">= {least}"
            raise ValueError(f"{key}: expected an integer {span}, got {value!r}")
    if opts["actor"] not in ACTORS:
        raise ValueError(f"actor: expected one of {', '.join(ACTORS)}, got {opts['actor']!r}")
    for key in SHARES:
        value = opts[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"{key}: expected a share between 0 and 1, got {value!r}")
    if not isinstance(opts["group_look"], bool):
        raise ValueError(f"group_look: expected true or false, got {opts['group_look']!r}")
    return opts


def identity(opts: dict) -> str:
    """Names the set: the generator's version, its options and the codec library's version."""
    key = {"version": VERSION, **opts, "libav": av.library_versions.get("libavcodec")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def ensure_videos(cache_dir: Path, progress=None, **given) -> Path:
    """The set's UCF-101-layout root, `<cache_dir>/videos-<identity>`, written (or finished) if needed."""
    opts = options(**given)
    root = Path(cache_dir) / f"videos-{identity(opts)}"
    marker = root / MARKER
    if not marker.exists():
        write_ucf101(root, progress=progress, **opts)
        write_atomic(marker, json.dumps({"version": VERSION, **opts}, sort_keys=True))
    return root
