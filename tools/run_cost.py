"""What a plan costs in device hours, from the throughput `make bench` measured (bench/*.json).

A bench file holds the training rate of a few fixed workloads on one device (tools/bench.py and
tools/bench_video3d.py build them; BENCH_WORKLOADS below says which figure is which): a CIFAR
ResNet-20 on 32x32 images, alone (scratch) and with two transfer modules fed by two ResNet-50
sources, their outputs cached or computed live; a 3D ResNet-18 on 16x112x112 clips with two transfer
modules and two ResNet-50 sources, cached or live; and how fast the 2D cache is built (ResNet-50
forwards on 74x74 inputs). A planned run is matched to them by what one of its training steps computes:

  measured     the same target at the same input size doing the same step (scratch: no sources; or the
               same number of sources with the same heads, their outputs cached, or live and the same
               networks at the same input size);
  upper bound  the bench's step at that target and input size does strictly more: cached outputs of at
               most as many sources, with lighter heads or none (KD reads one cached teacher, no heads);
               the run's time is at most the figure's;
  no figure    anything else (another target or input size, DML's two networks, MAXL, other live
               sources): counted and named, never guessed.

A run's work is epochs x training samples (videos: one clip per video per epoch): the training set
counted when its data is readable here, else its official size (OFFICIAL_TRAIN_SIZES). Only training
steps are counted: evaluation passes, start-up and data decoding beyond the bench's (in-memory images,
a frame store) are not. Device hours assume a run on several GPUs scales linearly (not measured).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.experiment import resolve_sources
from models.sources import DEFAULT_RESIZE_SCALE
from pipelines.datasets.video import VIDEO_READERS

DEFAULT_BENCH = (Path("bench/gpu-h100.json"), Path("bench/results.json"))
# Official training-split sizes, used when the data is not here to count (UCF-101 and HMDB-51 by split).
OFFICIAL_TRAIN_SIZES = {"cifar10": 50000, "cifar100": 50000, "stl10": 5000, "voc2007": 5011,
                        "ucf101": {1: 9537, 2: 9586, 3: 9624}, "hmdb51": {1: 3570, 2: 3570, 3: 3570}}
IMAGE_SIZES = {"cifar10": (32, 32), "cifar100": (32, 32), "stl10": (96, 96), "procedural": (32, 32)}
HEAD_COST = {None: 0, "linear": 1, "transfer_module": 2}  # a linear head on the pooled feature < a transfer module


@dataclass(frozen=True)
class Workload:
    """What one training step computes, as far as its time goes."""
    target: str
    input: tuple[int, ...]  # (H, W) images, (T, H, W) clips
    sources: int = 0
    outputs: str = "none"  # the sources' outputs: none, cached, live
    heads: str | None = None  # auxiliary head kind; None without heads
    live: tuple[tuple[str, tuple[int, ...]], ...] = ()  # live sources: (arch, their input size)

    def describe(self) -> str:
        size = "x".join(map(str, self.input))
        if not self.sources:
            return f"{self.target} {size}, no sources"
        heads = f", {self.heads} heads" if self.heads else ", no heads"
        live = f" ({', '.join(f'{a} at {chr(120).join(map(str, s))}' for a, s in self.live)})" if self.live else ""
        return f"{self.target} {size}, {self.sources} {self.outputs} source(s){live}{heads}"


# bench JSON path to a rate -> the workload it measured (tools/bench.py: time_training; tools/bench_video3d.py)
_CIFAR_SSKT = Workload("resnet20", (32, 32), 2, "cached", "transfer_module")
_CLIP_SSKT = Workload("resnet3d_18", (16, 112, 112), 2, "cached", "transfer_module")
BENCH_WORKLOADS = {
    ("training", "images_per_s", "scratch"): Workload("resnet20", (32, 32)),
    ("training", "images_per_s", "cached"): _CIFAR_SSKT,
    ("training", "images_per_s", "live"): replace(_CIFAR_SSKT, outputs="live", live=(("resnet50", (74, 74)),) * 2),
    ("video3d", "resnet3d_18", "clips_per_s", "cached"): _CLIP_SSKT,
    ("video3d", "resnet3d_18", "clips_per_s", "live"): replace(_CLIP_SSKT, outputs="live", live=(("resnet50", (112, 112)),) * 2),
}
CACHE_BUILD = ("resnet50", (74, 74))  # training.cache.forwards_per_s: ResNet-50 forwards on 74x74 (32x32 x 7/3)


@dataclass(frozen=True)
class Bench:
    """One bench file's figures: workload -> samples/s, and the 2D cache build's source forwards/s."""
    path: Path
    device: str
    gpu: bool
    batch: int | None
    rates: dict[Workload, float]
    cache_forwards_per_s: float | None

    @property
    def unit(self) -> str:
        return "GPU-hours" if self.gpu else "hours"


def read_bench(path: Path) -> Bench:
    """The figures a bench file holds (ValueError naming the file when it is not one)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a bench file ({type(e).__name__}: {e})") from None
    rates = {}
    for keys, workload in BENCH_WORKLOADS.items():
        value = report
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and value > 0:
            rates[workload] = float(value)
    forwards = (report.get("training") or {}).get("cache", {}).get("forwards_per_s")
    gpu = report.get("device", "cpu") != "cpu"
    device = (report.get("provenance") or {}).get("device") or report.get("device", "unknown device")
    threads = f", {report['torch_threads']} threads" if not gpu and "torch_threads" in report else ""
    return Bench(Path(path), f"{device}{threads}", gpu, report.get("batch"), rates, forwards or None)


# ---------------------------------------------------------------- a run's workload and work

def input_size(data_cfg, counted: tuple[int, tuple] | None) -> tuple[int, ...] | None:
    if data_cfg.dataset in VIDEO_READERS:
        return (data_cfg.clip_length, data_cfg.sample_size, data_cfg.sample_size)
    if counted is not None:
        return tuple(counted[1])
    if getattr(data_cfg, "image_size", None):
        return (data_cfg.image_size, data_cfg.image_size)
    return IMAGE_SIZES.get(data_cfg.dataset)


def train_samples(data_cfg, counted: tuple[int, tuple] | None) -> tuple[int | None, str]:
    """Training samples per epoch and where the count comes from ("counted" or "official")."""
    if counted is not None:
        return counted[0], "counted"
    official = OFFICIAL_TRAIN_SIZES.get(data_cfg.dataset)
    if isinstance(official, dict):
        official = official.get(getattr(data_cfg, "split", 1))
    if official is None:
        return None, "unknown"
    if getattr(data_cfg, "limit", None):
        official = min(official, data_cfg.limit)
    held_out = getattr(data_cfg, "val_fraction", 0.0)
    return official - (max(1, round(held_out * official)) if held_out else 0), "official"


def workload(cfg, size: tuple[int, ...]) -> Workload | str:
    """What one training step of `cfg` computes, or why it is no workload a bench measures."""
    method, sources = cfg.method.name, resolve_sources(cfg)
    if method == "scratch" or (method == "sskt" and not sources):
        return Workload(cfg.model.target, size)
    if method not in ("sskt", "kd"):
        return f"method {method} ({'two networks trained together' if method == 'dml' else 'its own step'})"
    caching = {source.cache != "off" for source in sources}
    if len(caching) > 1:
        return "some sources cached, some live"
    heads = cfg.model.head if method == "sskt" else None
    if caching == {True}:
        return Workload(cfg.model.target, size, len(sources), "cached", heads)
    live = tuple((source.arch or "?", source_input(source, size)) for source in sources)
    return Workload(cfg.model.target, size, len(sources), "live", heads, live)


def source_input(source, size: tuple[int, ...]) -> tuple[int, int]:
    """The size a source sees a (H, W) image or a clip's frame at (models.sources.FrozenSource.input_size)."""
    h, w = size[-2:]
    if source.resize is not None and source.resize.size is not None:
        return source.resize.size, source.resize.size
    scale = source.resize.scale if source.resize is not None else DEFAULT_RESIZE_SCALE
    return int(h * scale), int(w * scale)


def match(run: Workload, bench: Bench) -> tuple[Workload, str] | None:
    """The bench workload that gives `run` a figure, and how: "measured" or "upper bound"."""
    for measured in bench.rates:
        if (measured.target, measured.input) != (run.target, run.input):
            continue
        if run == measured:
            return measured, "measured"
        if (run.outputs == measured.outputs == "cached" and run.sources <= measured.sources
                and run.heads in HEAD_COST and HEAD_COST[run.heads] <= HEAD_COST[measured.heads]):
            return measured, "upper bound"
    return None


# ---------------------------------------------------------------- the plan's estimate

@dataclass
class Estimate:
    """A plan's hours on one bench's device: by how the figure fits, and the runs it has none for."""
    bench: Bench
    hours: dict[str, float] = field(default_factory=lambda: {"measured": 0.0, "upper bound": 0.0})
    runs: dict[str, int] = field(default_factory=lambda: {"measured": 0, "upper bound": 0})
    figures: dict[tuple[Workload, str], list[str]] = field(default_factory=dict)  # -> the cells it served
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # why -> cells
    per_run: dict[Path, float] = field(default_factory=dict)  # run folder -> its hours on this device
    cache_hours: float = 0.0
    caches: int = 0
    caches_unmatched: dict[str, int] = field(default_factory=dict)
    official_counts: set = field(default_factory=set)


def estimate(runs: list[tuple[object, object, tuple[int, tuple] | None]], caches: list[tuple[object, int,
             tuple[int, tuple] | None]], bench: Bench) -> Estimate:
    """`runs`: (job, its config, its training set counted or None); `caches`: (config, source index, counted)."""
    result = Estimate(bench)
    for job, cfg, counted in runs:
        size = input_size(cfg.data, counted)
        samples, origin = train_samples(cfg.data, counted)
        step = workload(cfg, size) if size is not None else f"input size of {cfg.data.dataset} unknown"
        fit = match(step, bench) if isinstance(step, Workload) else None
        if fit is None or samples is None:
            why = step if isinstance(step, str) else (f"{step.describe()}: not measured" if fit is None
                                                      else f"training-set size of {cfg.data.dataset} unknown")
            result.unmatched.setdefault(why, []).append(job.label)
            continue
        if origin == "official":
            result.official_counts.add(cfg.data.dataset)
        hours = cfg.train.epochs * samples / bench.rates[fit[0]] / 3600
        result.hours[fit[1]] += hours
        result.runs[fit[1]] += 1
        result.per_run[job.run_dir] = hours
        result.figures.setdefault(fit, []).append(job.label)
    for cfg, index, counted in caches:
        source, size = resolve_sources(cfg)[index], input_size(cfg.data, counted)
        samples, _ = train_samples(cfg.data, counted)
        fits = (bench.cache_forwards_per_s and size is not None and len(size) == 2 and samples is not None
                and (source.arch, source_input(source, size)) == CACHE_BUILD)
        if not fits:
            why = ("per-frame video cache" if size is not None and len(size) == 3
                   else f"source {source.name} ({source.arch or 'arch from its checkpoint'})")
            result.caches_unmatched[why] = result.caches_unmatched.get(why, 0) + 1
            continue
        result.caches += 1
        result.cache_hours += samples * cfg.data.views / bench.cache_forwards_per_s / 3600
    return result


def report(result: Estimate, total_runs: int) -> list[str]:
    """The estimate as lines to print."""
    b = result.bench
    unit = b.unit
    lines = [f"# cost on {b.device} ({b.path}, batch {b.batch}; training steps only, evaluation not counted):"]
    for (workload_fit, how), cells in result.figures.items():
        shown = list(dict.fromkeys(cells))
        lines.append(f"#   {how}: {len(cells)} run(s) ({', '.join(shown[:3])}{' ...' if len(shown) > 3 else ''}) "
                     f"at {b.rates[workload_fit]:.0f}/s, the bench's {workload_fit.describe()}")
    for why, cells in result.unmatched.items():
        shown = list(dict.fromkeys(cells))
        lines.append(f"#   no figure: {len(cells)} run(s) ({', '.join(shown[:3])}{' ...' if len(shown) > 3 else ''}): "
                     f"{why}")
    if result.caches:
        lines.append(f"#   source caches: {result.caches} built at the bench's {b.cache_forwards_per_s:.0f} "
                     f"{CACHE_BUILD[0]} forwards/s on {'x'.join(map(str, CACHE_BUILD[1]))} inputs: "
                     f"{result.cache_hours:.2f} {unit}")
    for why, n in result.caches_unmatched.items():
        lines.append(f"#   no figure: {n} source cache(s) of {why}")
    if result.official_counts:
        lines.append(f"#   training-set sizes not counted here (data missing), official: "
                     f"{', '.join(sorted(result.official_counts))}")
    matched = result.runs["measured"] + result.runs["upper bound"]
    total = result.hours["measured"] + result.hours["upper bound"] + result.cache_hours
    bound = f", of which {result.hours['upper bound']:.2f} upper bounds" if result.runs["upper bound"] else ""
    lines.append(f"# estimate: {total:.2f} {unit} for {matched} of {total_runs} runs{bound}"
                 + (f" and {result.caches} cache(s)" if result.caches else "")
                 + (f"; {total_runs - matched} run(s) have no bench figure (not counted)"
                    if matched < total_runs else ""))
    return lines
