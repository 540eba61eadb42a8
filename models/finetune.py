"""Fine-tuning a target from a pretrained checkpoint, as 3D-ResNets-PyTorch does.

    target = load_pretrained_target("resnet3d_18", 101, "resnet-18-kinetics.pth")
    groups = fine_tuning_parameter_groups(target, ft_begin_index=4, heads=model.heads)
    optimizer = torch.optim.SGD(groups, lr=..., momentum=..., dampening=..., weight_decay=...)

Checkpoint format (3D-ResNets-PyTorch, e.g. resnet-18-kinetics.pth): a dict with `arch`
("resnet-18") and `state_dict` whose keys carry DataParallel's `module.` prefix. Files
written by old PyTorch lack BatchNorm's `num_batches_tracked`; PyTorch fills it in.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.registry import build_target
from models.targets.base import Target
from foundation.errors import UserError


# Where 3D-ResNets-PyTorch's Kinetics checkpoints (resnet-18-kinetics.pth, ...) are published.
KINETICS_CHECKPOINTS = "https://drive.google.com/drive/folders/1zvl89AgFAApbH0At-gMuZSeQB_LpNP-M"


class ModelError(UserError):
    """One line naming the checkpoint file and the key at fault."""


def load_pretrained_target(name: str, num_classes: int, path: str | Path, **factory_kw) -> Target:
    """Registry target `name` with the checkpoint's weights and a fresh classifier for `num_classes`.

    As the reference: every weight but the classifier's is loaded strictly (the checkpoint's
    classifier must have the right input width; its class count, 400 for Kinetics, may
    differ), then the classifier is a new nn.Linear. `factory_kw` goes to the target factory
    (e.g. shortcut="B" for the reference's ResNet-50 checkpoints).
    """
    path = Path(path)
    state, arch = read_checkpoint(path)
    target = build_target(name, num_classes, **factory_kw)
    expected_arch = getattr(target, "pretrained_arch", None)
    if arch is not None and expected_arch is not None and arch != expected_arch:
        raise ModelError(f"{path}: first mismatching key 'arch': {arch!r} in the checkpoint, "
                         f"target {name} is {expected_arch!r}")
    classifier = target.classifier_name + "."
    _check_keys(path, name, target, state, any_rows=classifier)
    target.load_state_dict({k: v for k, v in state.items() if not k.startswith(classifier)}, strict=False)
    target.reset_classifier(num_classes)
    return target


def fine_tuning_parameter_groups(target: Target, ft_begin_index: int, heads: nn.Module | None = None,
                                 train_heads: bool = False) -> list[dict[str, Any]]:
    """Optimizer parameter groups of 3D-ResNets-PyTorch's `get_fine_tuning_parameters`.

    ft_begin_index = 0: everything trains. k in 1..5: only the target's parameters whose
    name contains `layer{k}` ... `layer4` or `fc` train; every other one is put in a group
    with lr 0 (it still gets gradients, weight decay and momentum terms, all multiplied by
    lr 0, so it never moves; BatchNorm running statistics still update in train mode, as
    in the reference). The reference's auxiliary heads match neither name, so with k > 0
    they stay at their initialisation; `train_heads=True` gives them the base lr instead.
    Groups without "lr" take the optimizer's lr. Schedulers that scale each group's lr
    (multistep, ReduceLROnPlateau, cosine to 0) keep 0 at 0. Setting requires_grad_(False)
    on the lr-0 group gives the same weights with a cheaper backward (gradients still reach
    layer4 through the heads).
    """
    if not isinstance(target, Target):  # e.g. a TargetWithHeads: its heads' own `fc` would match the rule
        raise TypeError(f"pass the target (model.target) and its heads (model.heads) apart, "
                        f"not a {type(target).__name__}")
    if not 0 <= ft_begin_index <= 5:
        raise ValueError(f"ft_begin_index must be 0 (train all) to 5 (classifier only), got {ft_begin_index}")
    head_params = list(heads.parameters()) if heads is not None else []
    if ft_begin_index == 0:
        return [{"params": list(target.parameters()) + head_params}]
    names = [f"layer{i}" for i in range(ft_begin_index, 5)] + ["fc"]
    trained, frozen = [], []
    for key, p in target.named_parameters():
        (trained if any(n in key for n in names) else frozen).append(p)
    if not trained:
        raise ValueError(f"{type(target).__name__} has no parameter named {' / '.join(names)}: the "
                         f"ft_begin_index rule is for ResNets with layer1-4 and fc")
    (trained if train_heads else frozen).extend(head_params)
    return [{"params": trained}] + ([{"params": frozen, "lr": 0.0}] if frozen else [])


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: pretrained checkpoint not found; put the 3D-ResNets-PyTorch file there "
                         f"(e.g. resnet-18-kinetics.pth, from {KINETICS_CHECKPOINTS}, linked from that "
                         f"project's README)") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read pretrained checkpoint: {e.strerror or e}") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: not a checkpoint torch.load(weights_only=True) reads ({reason[:200]})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise ModelError(f"{path}: first mismatching key 'state_dict': expected a dict with 'arch' and "
                         f"'state_dict' (the 3D-ResNets-PyTorch format)")
    arch = obj.get("arch")
    state = {k.removeprefix("module."): v for k, v in obj["state_dict"].items()}
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise ModelError(f"{path}: state_dict entry {bad!r} is not a tensor")
    return state, arch if isinstance(arch, str) else None


def _check_keys(path: Path, name: str, target: nn.Module, state: dict[str, torch.Tensor], any_rows: str) -> None:
    """Raise naming the first key (in the target's order) that is missing, extra or of another shape.

    Keys starting with `any_rows` (the classifier) may differ in their first dimension (classes).
    """
    own = target.state_dict()
    for key, value in own.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):  # absent from pre-0.4 PyTorch files; filled in on load
                continue
            hint = " (a shortcut-B target reading a shortcut-A checkpoint?)" if ".downsample." in key else ""
            raise ModelError(f"{path}: first mismatching key {key!r}: missing from the checkpoint "
                             f"(target {name}){hint}")
        theirs = state[key].shape
        if theirs != value.shape and not (key.startswith(any_rows) and theirs[1:] == value.shape[1:]):
            raise ModelError(f"{path}: first mismatching key {key!r}: shape {tuple(theirs)} in the "
                             f"checkpoint, {tuple(value.shape)} in target {name}")
    extra = [k for k in state if k not in own]
    if extra:
        hint = " (a shortcut-B checkpoint? build with shortcut='B')" if ".downsample." in extra[0] else ""
        raise ModelError(f"{path}: first mismatching key {extra[0]!r}: not in target {name}{hint}")
