"""Frozen source networks: pretrained classifiers whose scores the target imitates.

A source takes the target's images (uint8 pixels or float in [0, 1], NCHW, at the target's size),
resizes and normalizes them its own way and returns float32 logits. It never
trains: BatchNorm statistics stay fixed whatever `train()` is called with (the
reference implementation left sources in train mode, so their statistics drifted).

Weight files come in three formats (`SourceConfig.format`):
  torchvision  a torchvision weights enum name (IMAGENET1K_V1), found in or fetched to
               <torch hub dir>/checkpoints/, or a path to a state_dict
  places365    a CSAIL Places365 `{arch}_places365.pth.tar` ({"state_dict": {"module.<key>": ...}})
  checkpoint   any local file: a state_dict, or a dict holding one under "state_dict"
               (plus optional "arch", "num_classes", "mean", "std", "input_size", "class_names",
               as engine.checkpoint.save_deployed writes them); arch is a torchvision name or a
               models.registry name ("torchvision:<name>" / "registry:<name>" force one)

What a config leaves out (arch, num_classes, mean, std, resize) is read from the checkpoint
when it records it, so a target a run exported serves as a KD teacher or a source as it is;
otherwise mean/std default to ImageNet's and resize to scale 7/3 (the paper's CIFAR/STL setting).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from models.network import Normalize, unit_float
from foundation.files import file_sha256
from foundation.errors import UserError
from foundation.registry import Registry

PLACES365_URL = "http://places2.csail.mit.edu/models_places365/{arch}_places365.pth.tar"
# Bump when the preprocessing or forward changes, so caches keyed by fingerprint() go stale.
_FINGERPRINT_VERSION = "sskt-source-v1"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_RESIZE_SCALE = 7 / 3


class SourceError(UserError):
    """One line naming the source and the file at fault, and what to do."""


class Resize(NamedTuple):
    scale: float | None = None
    size: int | None = None


class FrozenSource(nn.Module):
    def __init__(self, name: str, net: nn.Module, *, arch: str, weights_path: Path, num_classes: int,
                 resize: Resize, mean, std, weights_sha256: str | None = None):
        super().__init__()
        self.name = name
        self.arch = arch
        self.num_classes = num_classes
        self.weights_path = Path(weights_path)
        self.weights_sha256 = weights_sha256 or file_sha256(self.weights_path)
        scale, size = resize
        # Plain float/int so equal settings (2 vs 2.0) give one fingerprint.
        self.resize = Resize(None if scale is None else float(scale), None if size is None else int(size))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.normalize = Normalize(self.mean, self.std)
        self.net = net
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenSource:
        # Parents call train(True) on every child; a source must ignore it.
        return super().train(False)

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        if self.resize.size is not None:
            return self.resize.size, self.resize.size
        return int(h * self.resize.scale), int(w * self.resize.scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = unit_float(images).float()
            size = self.input_size(*x.shape[-2:])
            if size != tuple(x.shape[-2:]):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
            logits = self.net(self.normalize(x))
            if not isinstance(logits, torch.Tensor):  # a registry target may return a tuple / NamedTuple
                logits = logits.logits if hasattr(logits, "logits") else logits[0]
            logits = logits.float()
        # Inference tensors cannot be saved for backward; a plain copy can enter a loss.
        return logits.clone()

    def fingerprint(self) -> str:
        key = {
            "version": _FINGERPRINT_VERSION,
            "arch": self.arch,
            "weights_sha256": self.weights_sha256,
            "num_classes": self.num_classes,
            "resize": self.resize._asdict(),
            "mean": self.mean,
            "std": self.std,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, arch={self.arch!r}, weights={str(self.weights_path)!r}, resize={tuple(self.resize)}"


class SourceSpec(NamedTuple):
    """What load_source reads of a source's config (engine.config.SourceConfig has these fields too)."""
    name: str
    format: str
    arch: str | None = None
    weights: str | None = None
    num_classes: int | None = None
    resize: Any = None
    mean: tuple | None = None
    std: tuple | None = None


def load_deployed(path: Path | str) -> tuple[FrozenSource, dict]:
    """A deployed checkpoint (engine.checkpoint.save_deployed) as a frozen network on images in [0, 1]: its
    arch, input size, mean and std come from the file; and the file's other fields (class names, ...)."""
    network = load_source(SourceSpec(name=str(path), format="checkpoint", weights=str(path)))
    meta = torch.load(path, map_location="cpu", weights_only=True)
    return network, {k: v for k, v in meta.items() if k != "state_dict"}


def weights_file(cfg, index: int | None = None) -> tuple[Path, str | None]:
    """Where a source's weight file lies and the URL it is downloaded from when missing (None: a local
    file the config names); nothing is read or downloaded."""
    fmt, arch = cfg.format, cfg.arch
    where = f"source '{cfg.name}'"
    key = f"sources.{index if index is not None else '<i>'}.weights"
    if fmt not in FORMATS:
        raise SourceError(f"{where}: unknown format {fmt!r} ({', '.join(FORMATS)})")
    if not arch and fmt != "checkpoint":
        raise SourceError(f"{where}: format {fmt} needs sources.{index if index is not None else '<i>'}.arch")
    return FORMATS[fmt](where, key, arch, cfg.weights)


def load_source(cfg, index: int | None = None) -> FrozenSource:
    """Build a FrozenSource from a SourceConfig (any object with its attributes)."""
    name, fmt, arch = cfg.name, cfg.format, cfg.arch
    where = f"source '{name}'"
    path, url = weights_file(cfg, index)
    if url is not None:
        _fetch(where, f"sources.{index if index is not None else '<i>'}.weights", path, url)

    data, sha = _read(where, path)
    obj = _torch_load(where, path, data)
    state_dict, meta = _split_checkpoint(where, path, obj)
    arch = arch or meta.get("arch")
    if not arch:
        raise SourceError(f"{where}: no arch given and {path} does not name one")
    num_classes = cfg.num_classes or meta.get("num_classes") or _infer_num_classes(state_dict)
    if not num_classes:
        raise SourceError(f"{where}: cannot tell num_classes from {path}; set it in the config")
    resize = _resize(where, cfg.resize, meta.get("input_size"))
    # Building a network draws random init weights; keep that off the training seed's stream.
    with torch.random.fork_rng(devices=[]):
        net = _build(where, arch, int(num_classes), registry_ok=fmt == "checkpoint")
    _load_state(where, path, net, state_dict)
    return FrozenSource(name, net, arch=arch, weights_path=path, num_classes=int(num_classes), resize=resize,
                        mean=cfg.mean or meta.get("mean") or IMAGENET_MEAN,
                        std=cfg.std or meta.get("std") or IMAGENET_STD, weights_sha256=sha)


def _resize(where: str, given, input_size) -> Resize:
    """The config's resize, else the checkpoint's square input size ([H, W] images, [T, H, W] clips),
    else scale 7/3."""
    if given is None:
        if input_size and len(input_size) in (2, 3) and input_size[-2] == input_size[-1]:
            return Resize(size=int(input_size[-1]))
        return Resize(scale=DEFAULT_RESIZE_SCALE)
    resize = Resize(*(given.get(k) for k in Resize._fields)) if isinstance(given, dict) else \
        Resize(getattr(given, "scale", None), getattr(given, "size", None))
    if (resize.scale is None) == (resize.size is None):
        raise SourceError(f"{where}: give exactly one of resize.scale and resize.size")
    return resize


# ---------------------------------------------------------------- weight files, by format

def _places365_weights_path(where: str, key: str, arch: str, weights: str | None) -> tuple[Path, str | None]:
    if weights:
        return Path(weights), None
    return _hub_checkpoints() / f"{arch}_places365.pth.tar", PLACES365_URL.format(arch=arch)


def _checkpoint_weights_path(where: str, key: str, arch: str, weights: str | None) -> tuple[Path, str | None]:
    if not weights:
        raise SourceError(f"{where}: format checkpoint needs {key} set to a local file")
    return Path(weights), None


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _torchvision_weights_path(where: str, key: str, arch: str, weights: str | None) -> tuple[Path, str | None]:
    try:
        enum = torchvision.models.get_model_weights(arch)
    except Exception:
        enum = None
    name = weights or "DEFAULT"
    if enum is not None and name in enum.__members__:
        url = enum[name].url
        return _hub_checkpoints() / Path(url).name, url
    if weights is None:
        raise SourceError(f"{where}: torchvision has no pretrained weights for {arch!r}; set {key} to a local file")
    if enum is not None and re.fullmatch(r"[A-Z0-9_]+", weights):  # looks like an enum name, not a path
        raise SourceError(f"{where}: {weights!r} is not a weights name of {arch} "
                          f"({', '.join(enum.__members__)}) nor a file")
    return Path(weights), None


def _fetch(where: str, key: str, path: Path, url: str) -> None:
    if path.is_file():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # torch writes a temporary file beside `path` and renames it: no half files.
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as e:
        raise SourceError(f"{where}: weights file {path} is missing and could not be downloaded from {url} "
                          f"({_one_line(e)}); download it there, or set {key} to a local file") from None


# format name -> (where, key, arch, weights) -> (the weight file, the URL it comes from or None): the one list of formats.
FORMATS = Registry("source format", entries={"torchvision": _torchvision_weights_path,
                                             "places365": _places365_weights_path,
                                             "checkpoint": _checkpoint_weights_path})


def _read(where: str, path: Path) -> tuple[bytes, str]:
    # One read serves both the hash and the load, so the hash is that of the weights used.
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{where}: weights file {path} not found") from None
    except OSError as e:
        raise SourceError(f"{where}: cannot read weights file {path}: {_one_line(e)}") from None
    return data, hashlib.sha256(data).hexdigest()


def _torch_load(where: str, path: Path, data: bytes) -> Any:
    try:
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except UnicodeDecodeError:  # Python-2 pickles (old CSAIL files)
            with warnings.catch_warnings():
                # torch warns that encoding is ignored with weights_only, yet its unpickler honours it
                warnings.filterwarnings("ignore", message="pickle_load_args only works")
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True, encoding="latin1")
    except Exception as e:
        # torch's weights_only message is long advice on unsafe loading; its core is the unpickler's reason.
        m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", str(e), re.S)
        reason = _one_line(m.group(1).split(". ")[0]) if m else _one_line(e)
        raise SourceError(f"{where}: {path} is not a weights checkpoint that torch.load(weights_only=True) reads "
                          f"({reason}); expected tensors, e.g. a saved state_dict") from None


def _split_checkpoint(where: str, path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict without DataParallel prefixes, metadata such as arch/num_classes)."""
    meta: dict = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = {k: obj[k] for k in ("arch", "num_classes") if isinstance(obj.get(k), (str, int))}
        meta.update({k: tuple(obj[k]) for k in ("mean", "std", "input_size", "class_names")
                     if isinstance(obj.get(k), (list, tuple))})
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SourceError(f"{where}: {path} holds no state_dict (expected tensors by name, "
                          f"or a dict with a 'state_dict' entry)")
    return {_clean_key(str(k)): v for k, v in obj.items()}, meta


_DENSENET_OLD = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _clean_key(key: str) -> str:
    # DataParallel prefixes whole models ("module.x") and CSAIL's AlexNet/VGG only their
    # features ("features.module.0"); old DenseNet files spell "norm.1" for "norm1".
    parts = [p for p in key.split(".") if p != "module"]
    key = ".".join(parts)
    m = _DENSENET_OLD.match(key)
    return m.group(1) + m.group(2) if m else key


def _infer_num_classes(state_dict: dict[str, torch.Tensor]) -> int | None:
    for k in ("fc.weight", "classifier.weight", "head.weight", "heads.head.weight"):
        if k in state_dict and state_dict[k].dim() == 2:
            return state_dict[k].shape[0]
    last = [v for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 2]
    return last[-1].shape[0] if last else None


# ---------------------------------------------------------------- networks

def _build(where: str, arch: str, num_classes: int, registry_ok: bool) -> nn.Module:
    kind, _, name = arch.partition(":") if arch.startswith(("torchvision:", "registry:")) else ("", "", arch)
    if kind != "registry" and name in torchvision.models.list_models(module=torchvision.models):
        try:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except Exception as e:
            raise SourceError(f"{where}: cannot build torchvision {name} with {num_classes} classes: {_one_line(e)}") from None
    if kind == "torchvision" or not registry_ok:
        raise SourceError(f"{where}: {name!r} is not a torchvision classification model")
    try:
        from models.registry import build_target  # lazy: sources work without the target zoo
        return build_target(name, num_classes)
    except (ImportError, KeyError, ValueError) as e:
        raise SourceError(f"{where}: unknown architecture {name!r}: not a torchvision classification model "
                          f"nor a models.registry name ({_one_line(e)})") from None


def _load_state(where: str, path: Path, net: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    try:
        # strict=False only so that missing/unexpected keys can be reported in one line below;
        # shape mismatches still raise here.
        result = net.load_state_dict(state_dict, strict=False)
    except RuntimeError as e:
        lines = [s.strip() for s in str(e).splitlines() if "size mismatch" in s] or [_one_line(e)]
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        raise SourceError(f"{where}: {path} does not fit {type(net).__name__}: {lines[0]}{more}; "
                          f"are arch and num_classes right?") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {_first(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys {_first(result.unexpected_keys)}")
    if problems:
        raise SourceError(f"{where}: {path} does not fit {type(net).__name__} "
                          f"({'; '.join(problems)}); is arch right?")


def _first(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _one_line(e: BaseException | str, limit: int = 300) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()] or [type(e).__name__]
    return lines[0] if len(lines[0]) <= limit else lines[0][: limit - 3] + "..."
