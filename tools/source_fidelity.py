"""How closely each input policy of the 3D configs' frozen 2D sources reproduces what the SSKT reference's
sources computed.

    python -m tools.source_fidelity [--seeds 3] [--frames 32] [--photos 64] [--out bench/source_fidelity.json]
    make source-fidelity

The reference's 3D code fed its ImageNet / Places365 ResNet-50s each clip's middle frame at 112x112 as 0-255
values minus the ActivityNet mean (std 1) and left the sources in train mode: their BatchNorm layers
normalised with each batch's statistics (one batch per GPU under DataParallel). Here every candidate
policy's outputs are compared with those train-mode outputs on the same frames: mean KL(reference ||
candidate), top-1 agreement, mean target entropy (nats). Medians over seeds (each seed: new weights, new
frames).

Stand-ins (no weights or data sets can be downloaded here):
  sources  ResNet-50s in the torchvision layout (ImageNet, 1000 classes) and the CSAIL Places365 layout (365
           classes, {"state_dict": {"module.<key>": ...}}), written in those formats and loaded through
           models.sources.load_source exactly as a paper config resolves them (engine.experiment.resolve_sources).
           Random convolution weights; BatchNorm running statistics calibrated (cumulative average) on
           natural-looking frames at 224 normalised the ImageNet way, as a trained network's are on its training
           photos; the classifier centred on the calibration frames' mean feature and scaled so that its
           predictions there have a mean entropy of 2 nats (a trained classifier on photos is confident).
           What separates the policies is structural: the input's scale and offset against the running
           statistics the network was calibrated with, and batch against running statistics; those act the same
           on random and on trained filters. What random filters cannot show is a trained network's
           sensitivity to resolution (objects half their usual size at 112) and to the real UCF-101/ImageNet
           domain gap; the `shifted` frames model the latter crudely.
  frames   dead-leaves images (occluding discs, radii ~ r^-3: the scale invariance, 1/f^2 spectrum and sharp
           edges of natural images), mildly blurred with sensor noise, uint8; evaluation frames rendered at 224
           and resized to 112 as a video loader does. `same`: drawn like the calibration frames; `shifted`:
           darker, lower-contrast, colour-cast and blurrier (low-quality video against photos).

Candidates (each a config override of the paper's 3D P+I config, except `frame+adabn`):
  eval 0-255        eval mode, the reference's normalisation (what the paper configs computed before)
  frame             eval mode, 112 px, the source's own mean/std (input: frame)
  own 224           eval mode, resized to 224, the source's own mean/std (input: own, resize.size 224)
  frame+adabn       frame, with BatchNorm statistics re-estimated on other frames of the evaluation domain
  input: reference  the train-mode policy as this engine computes it (a check: it must match the reference)
  reference b16     the reference itself on per-GPU batches of 16 instead of 32: how much the reference's own
                    targets move with the batch they happen to share (the floor no cacheable policy can beat)
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from engine.config import load_config
from engine.experiment import resolve_sources
from foundation.files import write_atomic
from models.sources import IMAGENET_MEAN, IMAGENET_STD, FrozenSource, load_source

PAPER_CONFIG = "configs/ucf101/resnet3d_18_scratch_sskt_PI.yaml"
REFERENCE_BATCH = 32  # per GPU: the paper's batch of 128 on 4 GPUs (DataParallel splits it)
CLIP_SIZE, SOURCE_SIZE = 112, 224
TARGET_ENTROPY = 2.0  # nats: the stand-in classifiers' mean entropy on their calibration photos


# ---------------------------------------------------------------- frames

def natural_frames(n: int, size: int, generator: torch.Generator, shifted: bool = False) -> torch.Tensor:
    """uint8 [n, 3, size, size] dead-leaves images (see the module docstring)."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    cast = 1 + 0.15 * torch.randn(n, 3, 1, 1, generator=generator)
    images = (rand(n, 1, 1, 1) * cast).expand(n, 3, size, size).clone()
    r_min, r_max = 0.04 * size, 0.5 * size  # ~3 layers of discs: the background is all but covered
    for _ in range(120):  # back to front: later discs occlude earlier ones
        u = rand(n)
        radius = (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5  # p(r) ~ r^-3
        cx, cy = rand(n) * size, rand(n) * size
        inside = (xs - cx.view(n, 1, 1)) ** 2 + (ys - cy.view(n, 1, 1)) ** 2 < radius.view(n, 1, 1) ** 2
        colour = rand(n, 1) * 0.9 + 0.05 + 0.08 * torch.randn(n, 3, generator=generator)
        colour = colour.view(n, 3, 1, 1) * cast
        images = torch.where(inside.unsqueeze(1), colour, images)
    sigma = 1.5 if shifted else 0.6
    images = _blur(images, sigma)
    if shifted:  # low-quality video: darker, flatter, warmer
        images = 0.1 + 0.55 * images * torch.tensor([1.1, 1.0, 0.8]).view(1, 3, 1, 1)
    images = images + 0.01 * torch.randn(images.shape, generator=generator)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    images = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), k, groups=3)
    return F.conv2d(F.pad(images, (0, 0, radius, radius), mode="reflect"), k.transpose(2, 3), groups=3)


def clip_frames(n: int, generator: torch.Generator, shifted: bool = False) -> torch.Tensor:
    """uint8 [n, 3, 112, 112]: frames rendered at 224 and resized to the clip size, as a video loader resizes."""
    frames = natural_frames(n, SOURCE_SIZE, generator, shifted).float()
    return F.interpolate(frames, size=CLIP_SIZE, mode="area").round().to(torch.uint8)


# ---------------------------------------------------------------- stand-in sources

def normalized(frames: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 frames -> (x / 255 - mean) / std."""
    x = frames.float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, inputs: torch.Tensor, batch: int = 32) -> nn.Module:
    """Set every BatchNorm layer's running statistics to their average over `inputs` (normalised images)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    net.train()
    for chunk in inputs.split(batch):
        net(chunk)
    for m in norms:
        m.momentum = 0.1
    return net.eval()


@torch.no_grad()
def standin_source(num_classes: int, seed: int, photos: torch.Tensor, arch: str = "resnet50") -> nn.Module:
    """A torchvision `arch` with random filters, BatchNorm calibrated on `photos` (uint8, at 224, normalised the
    ImageNet way) and a classifier centred on their mean feature, scaled to TARGET_ENTROPY there."""
    torch.manual_seed(seed)
    net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    x = normalized(photos, IMAGENET_MEAN, IMAGENET_STD)
    calibrate_batchnorm(net, x)
    fc, net.fc = net.fc, nn.Identity()
    features = torch.cat([net(chunk) for chunk in x.split(32)])
    net.fc = fc
    fc.bias.copy_(-fc.weight @ features.mean(0))
    logits = fc(features)
    low, high = 0.0, 1000.0  # entropy falls as the logits' scale grows
    for _ in range(50):
        gain = (low + high) / 2
        low, high = (gain, high) if entropy(logits * gain).mean() > TARGET_ENTROPY else (low, gain)
    fc.weight.mul_(gain)
    fc.bias.mul_(gain)
    return net


def write_weights(net: nn.Module, source_format: str, path: Path) -> Path:
    """`net` saved the way `source_format` ships: a torchvision state_dict, or CSAIL's Places365 checkpoint."""
    state = net.state_dict()
    if source_format == "places365":
        torch.save({"epoch": 90, "arch": "resnet50", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    return path


def paper_sources(weights: dict[str, Path], overrides: list[str] = (), config: str = PAPER_CONFIG) -> list[FrozenSource]:
    """The paper config's sources as training loads them (resolve_sources, load_source), on these weight files,
    with `overrides` applied to every source (`input=frame`, `resize={size: 224}`, ...)."""
    cfg = load_config(config)
    items = [f"sources.{i}.weights={weights[s.name]}" for i, s in enumerate(cfg.sources)]
    items += [f"sources.{i}.{o}" for i in range(len(cfg.sources)) for o in overrides]
    cfg = load_config(config, items)
    return [load_source(s, i) for i, s in enumerate(resolve_sources(cfg))]


# ---------------------------------------------------------------- what each policy computes

@torch.no_grad()
def reference_outputs(source: FrozenSource, frames: torch.Tensor, data_mean, batch: int = REFERENCE_BATCH) -> torch.Tensor:
    """The SSKT reference's computation, written out independently of FrozenSource: the network in train mode
    (BatchNorm on each batch's statistics) on 0-255 frames minus the data mean, std 1, one batch at a time."""
    net = copy.deepcopy(source.net).train()
    mean = torch.tensor(data_mean).view(1, 3, 1, 1) * 255
    return torch.cat([net(chunk.float() - mean) for chunk in frames.split(batch)])


def outputs(source: FrozenSource, frames: torch.Tensor, batch: int = REFERENCE_BATCH) -> torch.Tensor:
    return torch.cat([source(chunk) for chunk in frames.split(batch)])


def adapted(source: FrozenSource, frames: torch.Tensor) -> FrozenSource:
    """A copy of `source` whose BatchNorm statistics are re-estimated on `frames` as it sees them."""
    source = copy.deepcopy(source)
    x = frames.float() / 255
    size = source.input_size(*x.shape[-2:])
    if size != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    calibrate_batchnorm(source.net, source.normalize(x))
    return source


# ---------------------------------------------------------------- metrics

def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), 1)
    return -(logp.exp() * logp).sum(1)


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """Mean KL(reference || candidate), top-1 agreement and mean entropy of both (nats)."""
    ref_logp, cand_logp = F.log_softmax(reference.float(), 1), F.log_softmax(candidate.float(), 1)
    kl = (ref_logp.exp() * (ref_logp - cand_logp)).sum(1)
    return {"kl": kl.mean().item(), "top1_agreement": (reference.argmax(1) == candidate.argmax(1)).float().mean().item(),
            "entropy": entropy(candidate).mean().item(), "reference_entropy": entropy(reference).mean().item(),
            "logit_std": candidate.float().std().item()}


# ---------------------------------------------------------------- the measurement

CANDIDATES = {  # name -> config overrides applied to every source of the paper config
    "eval 0-255": ["input=own", "resize={scale: 1}", "mean=[0.450097, 0.422492, 0.390098]",
                   "std=[0.0039216, 0.0039216, 0.0039216]"],
    "frame": ["input=frame"],
    "own 224": ["input=own", "resize={size: 224}"],
    "input: reference": ["input=reference", "cache=off"],
}


def measure(seed: int, frames: int, photos: int, folder: Path, scenarios=("same", "shifted"), log=print) -> list[dict]:
    """Rows {scenario, seed, source, candidate, kl, top1_agreement, entropy, reference_entropy, logit_std}."""
    generator = torch.Generator().manual_seed(seed)
    calibration = natural_frames(photos, SOURCE_SIZE, generator)
    cfg = load_config(PAPER_CONFIG)
    data_mean = tuple(cfg.data.mean)
    weights = {}
    for i, source in enumerate(cfg.sources):
        classes = 365 if source.format == "places365" else 1000
        net = standin_source(classes, seed * 100 + i, calibration)
        weights[source.name] = write_weights(net, source.format, folder / f"{source.name}-{seed}.pth")
    policies = {name: paper_sources(weights, overrides) for name, overrides in CANDIDATES.items()}
    rows = []
    for scenario in scenarios:
        shifted = scenario == "shifted"
        test, adapt = clip_frames(frames, generator, shifted), clip_frames(frames, generator, shifted)
        for i, source in enumerate(cfg.sources):
            reference = reference_outputs(policies["frame"][i], test, data_mean)
            results = {name: outputs(loaded[i], test) for name, loaded in policies.items()}
            results["frame+adabn"] = outputs(adapted(policies["frame"][i], adapt), test)
            for batch in (16,):
                results[f"reference b{batch}"] = reference_outputs(policies["frame"][i], test, data_mean, batch)
            for name, logits in results.items():
                rows.append({"scenario": scenario, "seed": seed, "source": source.name, "candidate": name,
                             **compare(reference, logits)})
                log(f"  {scenario:8s} seed {seed} {source.name:10s} {name:18s} KL {rows[-1]['kl']:.4g}", flush=True)
    return rows


def medians(rows: list[dict]) -> list[dict]:
    keys = dict.fromkeys((r["scenario"], r["source"], r["candidate"]) for r in rows)
    table = []
    for scenario, source, candidate in keys:
        group = [r for r in rows if (r["scenario"], r["source"], r["candidate"]) == (scenario, source, candidate)]
        table.append({"scenario": scenario, "source": source, "candidate": candidate, "seeds": len(group),
                      **{k: statistics.median(r[k] for r in group)
                         for k in ("kl", "top1_agreement", "entropy", "reference_entropy", "logit_std")}})
    return table


def format_table(table: list[dict]) -> str:
    lines = [f"{'frames':8s} {'source':10s} {'candidate':18s} {'KL(ref||cand)':>13s} {'top-1 agree':>11s} "
             f"{'entropy':>8s} {'ref entropy':>11s} {'logit std':>10s}"]
    for r in table:
        lines.append(f"{r['scenario']:8s} {r['source']:10s} {r['candidate']:18s} {r['kl']:13.4g} "
                     f"{r['top1_agreement']:11.3f} {r['entropy']:8.3f} {r['reference_entropy']:11.3f} "
                     f"{r['logit_std']:10.4g}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32, help="evaluation frames per seed and scenario")
    parser.add_argument("--photos", type=int, default=64, help="BatchNorm calibration photos per seed (at 224)")
    parser.add_argument("--out", type=Path, default=Path("bench/source_fidelity.json"))
    parser.add_argument("--work", type=Path, default=Path("data/source_fidelity"), help="stand-in weight files")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = [row for seed in range(args.seeds) for row in measure(seed, args.frames, args.photos, args.work)]
    table = medians(rows)
    print(format_table(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps({"command": f"python -m tools.source_fidelity --seeds {args.seeds} "
                                                  f"--frames {args.frames} --photos {args.photos}",
                                       "reference_batch": REFERENCE_BATCH, "medians": table, "rows": rows},
                                      indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
