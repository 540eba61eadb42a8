"""3D targets and heads (Hara et al.'s 3D ResNets, the SSKT 3D transfer module) and Kinetics fine-tuning.

Shapes and parameter counts are computed here from the architecture descriptions; the
literal counts were measured by running 3D-ResNets-PyTorch's models/resnet.py (2017-18).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.finetune import ModelError, fine_tuning_parameter_groups, load_pretrained_target
from models.heads import LinearHead, TransferModule
from models.network import TargetWithHeads, count_parameters
from models.registry import build_head, build_target
from models.targets.base import Target
from models.targets.resnet3d import BasicBlock3d, ResNet3d

RESNET3D = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
            50: ("bottleneck", [3, 4, 6, 3])}
# Parameter counts of 3D-ResNets-PyTorch's resnet{10,18,34,50}(num_classes=400, shortcut_type=...).
REFERENCE_COUNTS = {(10, "A"): 14_430_800, (10, "B"): 14_604_624, (18, "A"): 33_235_280, (18, "B"): 33_409_104,
                    (34, "A"): 63_544_912, (34, "B"): 63_718_736, (50, "A"): 44_242_000, (50, "B"): 47_018_576}
# The SSKT reference's 3D transfer module (aggregation_feature) for 365 source classes.
REFERENCE_TM_COUNTS = {"basic": 29_869_365, "bottleneck": 31_309_365}
CLIP = (2, 3, 8, 32, 32)  # N, C, T, H, W: tiny, so that CPU forwards stay fast


def conv3d(k: int, cin: int, cout: int, bias: bool = False) -> int:
    return k**3 * cin * cout + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def linear(i: int, o: int) -> int:
    return i * o + o


def resnet3d_params(block: str, layers: list[int], num_classes: int, shortcut: str) -> int:
    total = conv3d(7, 3, 64) + bn(64)
    cin = 64
    for i, blocks in enumerate(layers):
        planes = 64 * 2**i
        for b in range(blocks):
            stride = 2 if i > 0 and b == 0 else 1
            if block == "basic":
                cout = planes
                total += conv3d(3, cin, planes) + bn(planes) + conv3d(3, planes, planes) + bn(planes)
            else:
                cout = 4 * planes
                total += conv3d(1, cin, planes) + bn(planes) + conv3d(3, planes, planes) + bn(planes)
                total += conv3d(1, planes, cout) + bn(cout)
            if (stride != 1 or cin != cout) and shortcut == "B":
                total += conv3d(1, cin, cout) + bn(cout)
            cin = cout
    return total + linear(cin, num_classes)


def transfer_module3d_params(stage_channels: list[int], num_classes: int, width: int = 1000, mid: int = 500) -> int:
    def branch(c: int) -> int:
        return conv3d(1, c, mid, True) + bn(mid) + conv3d(3, mid, mid, True) + bn(mid) + conv3d(1, mid, width, True) + bn(width)

    return sum(branch(c) for c in stage_channels) + linear(width, num_classes)


def out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def expected_stage_shapes(block: str, n: int, t: int, hw: int, width: int = 64, max_pool: bool = True,
                          conv1_t_size: int = 7, conv1_t_stride: int = 1) -> list[tuple[int, ...]]:
    """conv1 (kernel (conv1_t_size,7,7), stride (conv1_t_stride,2,2), pad (conv1_t_size//2,3,3)), max-pool
    (3, stride 2, pad 1) unless dropped, stages 2-4 stride 2."""
    t, hw = out_size(t, conv1_t_size, conv1_t_stride, conv1_t_size // 2), out_size(hw, 7, 2, 3)
    if max_pool:
        t, hw = out_size(t, 3, 2, 1), out_size(hw, 3, 2, 1)
    shapes, e = [], 4 if block == "bottleneck" else 1
    for i in range(4):
        if i > 0:
            t, hw = out_size(t, 3, 2, 1), out_size(hw, 3, 2, 1)
        shapes.append((n, width * 2**i * e, t, hw, hw))
    return shapes


# ---- shapes and parameter counts ----

@pytest.mark.parametrize("depth,shortcut", list(REFERENCE_COUNTS))
def test_resnet3d_param_counts(depth: int, shortcut: str):
    block, layers = RESNET3D[depth]
    assert resnet3d_params(block, layers, 400, shortcut) == REFERENCE_COUNTS[depth, shortcut]
    with torch.device("meta"):  # counts only: no memory, no init time
        target = build_target(f"resnet3d_{depth}", 400, shortcut=shortcut)
        assert count_parameters(target) == REFERENCE_COUNTS[depth, shortcut]
        assert count_parameters(build_target(f"resnet3d_{depth}", 101, shortcut=shortcut)) == \
            resnet3d_params(block, layers, 101, shortcut)
        tm = build_head("transfer_module", target, 365)
        assert count_parameters(tm) == transfer_module3d_params(target.stage_channels, 365) == REFERENCE_TM_COUNTS[block]
        assert count_parameters(build_head("linear", target, 365)) == linear(512 * (4 if block == "bottleneck" else 1), 365)
    assert sum(isinstance(m, nn.Conv3d) for m in tm.modules()) == 12 and not any(isinstance(m, nn.Conv2d) for m in tm.modules())


def test_the_quarter_width_resnet3d_10_scales_every_stage_and_its_heads():
    """resnet3d_10_w16 (the video demo's target): the ResNet-10 layout at 16-128 channels; no reference checkpoint."""
    with torch.device("meta"):
        target, full = build_target("resnet3d_10_w16", 7), build_target("resnet3d_10", 7)
        stages = target.forward_stages(torch.empty(*CLIP))
        assert target.stage_channels == [s.shape[1] for s in stages] == [c // 4 for c in full.stage_channels]
        assert [s.shape[2:] for s in stages] == [s.shape[2:] for s in full.forward_stages(torch.empty(*CLIP))]
        assert target.transfer_module_width == full.transfer_module_width // 4 and target.pretrained_arch is None
        assert build_head("transfer_module", target, 11)(stages, target.pool(stages[-1])).shape == (2, 11)
    assert full.pretrained_arch == "resnet-10"


@pytest.mark.parametrize("stem", [{}, {"no_max_pool": True}, {"conv1_t_size": 1, "no_max_pool": True},
                                  {"conv1_t_size": 3, "conv1_t_stride": 2}])
def test_resnet3d_stem_options_for_small_inputs(stem: dict):
    """3D-ResNets-PyTorch's `no_max_pool`, `conv1_t_size`, `conv1_t_stride`: conv1 and the stage shapes
    follow them; the defaults are the 2017-18 stem."""
    clip = (2, 3, 8, 32, 32)
    t_size, t_stride = stem.get("conv1_t_size", 7), stem.get("conv1_t_stride", 1)
    with torch.device("meta"):
        target = ResNet3d(BasicBlock3d, [1, 1, 1, 1], 7, width=16, **stem)
        stages = target.forward_stages(torch.empty(*clip))
        assert [tuple(s.shape) for s in stages] == expected_stage_shapes(
            "basic", 2, 8, 32, width=16, max_pool=not stem.get("no_max_pool", False), conv1_t_size=t_size,
            conv1_t_stride=t_stride)
        assert target.conv1.kernel_size == (t_size, 7, 7) and target.conv1.stride == (t_stride, 2, 2)
        assert target.conv1.padding == (t_size // 2, 3, 3) and target(torch.empty(*clip)).shape == (2, 7)
        assert isinstance(target.maxpool, nn.MaxPool3d) != stem.get("no_max_pool", False)
        default = build_target("resnet3d_10_w16", 7)
        assert isinstance(default.maxpool, nn.MaxPool3d) and default.conv1.kernel_size == (7, 7, 7)
        assert [tuple(s.shape) for s in default.forward_stages(torch.empty(*clip))] == \
            expected_stage_shapes("basic", 2, 8, 32, width=16)


# The video demo's small-clip stems on resnet3d_10_w16: conv1 (kernel, stride, padding) and stage shapes on 8x32x32.
DEMO_STEMS = {
    # conv1 1x7x7, no max pool: each frame at half resolution in stage 1
    "resnet3d_10_w16_small_clips": (((1, 7, 7), (1, 2, 2), (0, 3, 3)),
                                    [(16, 8, 16, 16), (32, 4, 8, 8), (64, 2, 4, 4), (128, 1, 2, 2)]),
    # a CIFAR stem, conv1 3x3x3 stride 2 in time only, no max pool: stage 1 at the clip's full height and width
    "resnet3d_10_w16_full_res": (((3, 3, 3), (2, 1, 1), (1, 1, 1)),
                                 [(16, 4, 32, 32), (32, 2, 16, 16), (64, 1, 8, 8), (128, 1, 4, 4)]),
}


@pytest.mark.parametrize("name", list(DEMO_STEMS))
def test_the_demo_stems_change_conv1_and_the_max_pool_alone(name: str):
    (kernel, stride, padding), stage_shapes = DEMO_STEMS[name]
    with torch.device("meta"):
        target, default = build_target(name, 7), build_target("resnet3d_10_w16", 7)
        stages = target.forward_stages(torch.empty(2, 3, 8, 32, 32))
        assert [tuple(s.shape) for s in stages] == [(2, *shape) for shape in stage_shapes]
        assert (target.conv1.kernel_size, target.conv1.stride, target.conv1.padding) == (kernel, stride, padding)
        assert isinstance(target.maxpool, nn.Identity) and target.stage_channels == default.stage_channels
        assert count_parameters(target) == count_parameters(default) - conv3d(7, 3, 16) + 3 * 16 * math.prod(kernel)
        assert build_head("linear", target, 11)(stages, target.pool(stages[-1])).shape == (2, 11)


@pytest.mark.parametrize("depth", list(RESNET3D))
def test_resnet3d_shapes_and_heads(depth: int):
    block, _ = RESNET3D[depth]
    with torch.device("meta"):  # shapes only
        target = build_target(f"resnet3d_{depth}", 7)
        assert isinstance(target, Target) and target.spatial_dims == 3 and target.transfer_module_width == 1000
        stages = target.forward_stages(torch.empty(*CLIP))
        assert [tuple(s.shape) for s in stages] == expected_stage_shapes(block, CLIP[0], CLIP[2], CLIP[3])
        assert target.stage_channels == [s.shape[1] for s in stages]
        pooled = target.pool(stages[-1])
        assert pooled.shape == (2, target.stage_channels[-1]) and target(torch.empty(*CLIP)).shape == (2, 7)
        for kind, cls in (("linear", LinearHead), ("transfer_module", TransferModule)):
            head = build_head(kind, target, 11)
            assert isinstance(head, cls) and head(stages, pooled).shape == (2, 11)


def test_resnet3d_18_forward_on_cpu():
    torch.manual_seed(0)
    target = build_target("resnet3d_18", 7).eval()
    x = torch.randn(*CLIP)
    with torch.no_grad():
        stages = target.forward_stages(x)
        assert [tuple(s.shape) for s in stages] == expected_stage_shapes("basic", CLIP[0], CLIP[2], CLIP[3])
        pooled = target.pool(stages[-1])
        assert torch.allclose(pooled, stages[-1].mean(dim=(2, 3, 4)))  # global average over T, H, W
        logits = target(x)
        assert logits.shape == (2, 7) and torch.isfinite(logits).all()
        assert torch.allclose(logits, target.fc(pooled), atol=1e-5)


def test_resnet3d_layout_matches_reference_keys():
    """The reference's module names and conv geometry, so its checkpoints load unchanged."""
    target = build_target("resnet3d_18", 400, shortcut="B")
    keys = [k for k in target.state_dict() if not k.endswith("num_batches_tracked")]
    assert keys[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"] and keys[-2:] == ["fc.weight", "fc.bias"]
    assert "layer2.0.downsample.0.weight" in keys and "layer1.0.downsample.0.weight" not in keys
    c = target.conv1
    assert (c.kernel_size, c.stride, c.padding, c.bias) == ((7, 7, 7), (1, 2, 2), (3, 3, 3), None)
    m = target.maxpool
    assert isinstance(m, nn.MaxPool3d) and (m.kernel_size, m.stride, m.padding) == (3, 2, 1)
    a_keys = [k for k in build_target("resnet3d_18", 400).state_dict() if not k.endswith("num_batches_tracked")]
    assert a_keys == [k for k in keys if ".downsample." not in k]


def test_shortcut_a_pads_zero_channels_and_passes_no_gradient():
    target = build_target("resnet3d_10", 5)
    shortcut = target.layer2[0].downsample
    assert count_parameters(shortcut) == 0
    x = torch.randn(2, 64, 5, 8, 8, requires_grad=True)
    out = shortcut(x)
    assert out.shape == (2, 128, 3, 4, 4)
    assert torch.equal(out[:, :64], x.detach()[:, :, ::2, ::2, ::2])  # the reference: avg_pool3d(kernel 1, stride 2)
    assert torch.count_nonzero(out[:, 64:]) == 0  # zeros appended after the input channels
    assert not out.requires_grad  # the reference concatenates `out.data`


# ---- the 3D transfer module against an independent computation ----

def transfer_module_by_hand(state: dict[str, torch.Tensor], stages: list[torch.Tensor], eps: float = 1e-5) -> torch.Tensor:
    """Per stage: (1x1x1 conv, BN, ReLU), (3x3x3 stride-2 conv, BN, ReLU), (1x1x1 conv, BN, ReLU),
    mean over T, H, W; the four vectors averaged; then the linear layer. BN in eval mode."""
    vectors = []
    for i, x in enumerate(stages):
        for conv, norm, stride, pad in ((0, 1, 1, 0), (3, 4, 2, 1), (6, 7, 1, 0)):
            p = f"branches.{i}."
            x = F.conv3d(x, state[f"{p}{conv}.weight"], state[f"{p}{conv}.bias"], stride, pad)
            shape = (1, -1, 1, 1, 1)
            x = (x - state[f"{p}{norm}.running_mean"].view(shape)) / torch.sqrt(state[f"{p}{norm}.running_var"].view(shape) + eps)
            x = torch.relu(x * state[f"{p}{norm}.weight"].view(shape) + state[f"{p}{norm}.bias"].view(shape))
        vectors.append(x.mean(dim=(2, 3, 4)))
    return (sum(vectors) / len(vectors)) @ state["fc.weight"].T + state["fc.bias"]


class _MaxOverStages(TransferModule):
    def forward(self, stages, pooled):
        return self.fc(torch.stack([b(s) for b, s in zip(self.branches, stages)]).amax(dim=0))


def _randomized(head: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for name, t in head.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.3)
    return head.eval()


def test_transfer_module3d_output_matches_hand_computation():
    torch.manual_seed(0)
    channels = [8, 16, 32, 64]  # a 3D ResNet's stage widths, scaled down; the structure is the one tested
    stages = [torch.randn(2, c, t, s, s) for c, t, s in zip(channels, (4, 2, 1, 1), (8, 4, 2, 1))]
    head = _randomized(TransferModule(channels, num_classes=5, width=20, spatial_dims=3))
    expected = transfer_module_by_hand(head.state_dict(), stages)
    with torch.no_grad():
        assert torch.allclose(head(stages, None), expected, atol=1e-5)
        # the comparison is sharp enough to catch a module that pools the stages by max
        wrong = _randomized(_MaxOverStages(channels, num_classes=5, width=20, spatial_dims=3))
        assert not torch.allclose(wrong(stages, None), expected, atol=1e-3)


def test_target_with_heads_on_clips():
    torch.manual_seed(0)
    target = build_target("resnet3d_10", 6)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    model = TargetWithHeads(target, {"places365": build_head("linear", target, 365)}, mean, std).eval()
    clips = torch.rand(*CLIP)
    with torch.no_grad():
        out = model(clips)
        plain = target((clips - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1))
    assert torch.allclose(out.logits, plain, atol=1e-5) and out.aux["places365"].shape == (2, 365)


# ---- Kinetics fine-tuning ----

def write_hara_checkpoint(path, depth: int = 18, num_classes: int = 400, shortcut: str = "A", **edit) -> dict:
    """A file as 3D-ResNets-PyTorch saves it: {'epoch', 'arch', 'state_dict' (keys 'module.'...), 'optimizer'};
    its 2017 files predate BatchNorm's num_batches_tracked."""
    torch.manual_seed(depth)
    state = {k: v for k, v in build_target(f"resnet3d_{depth}", num_classes, shortcut=shortcut).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    checkpoint = {"epoch": 200, "arch": f"resnet-{depth}", "state_dict": {f"module.{k}": v for k, v in state.items()},
                  "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}
    checkpoint.update(edit)
    torch.save(checkpoint, path)
    return state


def test_hara_checkpoint_loads_with_module_stripped_and_new_classifier(tmp_path):
    path = tmp_path / "resnet-18-kinetics.pth"
    state = write_hara_checkpoint(path)
    target = load_pretrained_target("resnet3d_18", 101, path)
    loaded = target.state_dict()
    assert loaded.keys() == build_target("resnet3d_18", 101).state_dict().keys()
    for k, v in state.items():
        if not k.startswith("fc."):
            assert torch.equal(loaded[k], v), k
    assert target.fc.weight.shape == (101, 512) and target.fc.bias.shape == (101,)
    assert not torch.equal(target.fc.weight[:101], state["fc.weight"][:101])  # replaced, not copied
    with torch.no_grad():
        assert target.eval()(torch.rand(*CLIP)).shape == (2, 101)


@pytest.mark.parametrize("case,expected", [
    ("missing", "pretrained checkpoint not found"),
    ("arch", "first mismatching key 'arch': 'resnet-34' in the checkpoint, target resnet3d_10 is 'resnet-10'"),
    ("shortcut_b", "first mismatching key 'layer2.0.downsample.0.weight': not in target resnet3d_10"),
    ("dropped_key", "first mismatching key 'layer3.0.bn2.weight': missing from the checkpoint"),
    ("shape", "first mismatching key 'layer1.0.conv1.weight': shape (64, 64, 1, 3, 3) in the checkpoint"),
    ("no_state_dict", "first mismatching key 'state_dict'"),
    ("not_torch", "not a checkpoint torch.load(weights_only=True) reads"),
])
def test_bad_pretrained_checkpoint_is_one_line_naming_file_and_key(tmp_path, case, expected):
    path = tmp_path / "resnet-10-kinetics.pth"  # the smallest depth: these files are written in full
    if case == "arch":
        write_hara_checkpoint(path, depth=10, arch="resnet-34")
    elif case == "shortcut_b":
        write_hara_checkpoint(path, depth=10, shortcut="B")
    elif case in ("dropped_key", "shape"):
        state = {f"module.{k}": v for k, v in write_hara_checkpoint(path, depth=10).items()}
        if case == "dropped_key":
            del state["module.layer3.0.bn2.weight"]
        else:
            state["module.layer1.0.conv1.weight"] = state["module.layer1.0.conv1.weight"][:, :, :1]
        torch.save({"arch": "resnet-10", "state_dict": state}, path)
    elif case == "no_state_dict":
        torch.save({"arch": "resnet-10"}, path)
    elif case == "not_torch":
        path.write_text("not a checkpoint")
    with pytest.raises(ModelError) as err:
        load_pretrained_target("resnet3d_10", 101, path)
    message = str(err.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_fine_tuning_groups_leave_the_frozen_part_unchanged():
    torch.manual_seed(0)
    target = build_target("resnet3d_10", 4)
    model = TargetWithHeads(target, {"imagenet": build_head("linear", target, 10)}, (0.5,) * 3, (0.25,) * 3)
    groups = fine_tuning_parameter_groups(model.target, 4, heads=model.heads)
    names = {id(p): n for n, p in model.named_parameters()}
    trained = {names[id(p)] for p in groups[0]["params"]}
    assert "lr" not in groups[0] and groups[1]["lr"] == 0.0
    # the reference's rule: names containing layer4 or fc; the head's own `fc` is not the target's
    assert trained == {n for n in names.values() if n.startswith(("target.layer4.", "target.fc."))}
    assert len(trained) + len(groups[1]["params"]) == len(names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # the reference's SGD settings; two steps so that momentum and weight decay act on the frozen part too
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9, dampening=0.9, weight_decay=1e-3)
    model.train()
    for _ in range(2):
        out = model(torch.rand(*CLIP))
        loss = F.cross_entropy(out.logits, torch.tensor([0, 3])) + out.aux["imagenet"].logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for n, p in model.named_parameters():
        if n in trained:
            assert not torch.equal(p, before[n]), f"{n} should train"
        else:
            assert torch.equal(p, before[n]), f"{n} should stay frozen"


def test_fine_tuning_groups_options():
    target = build_target("resnet3d_10", 4)
    heads = nn.ModuleDict({"imagenet": build_head("linear", target, 10)})
    every = list(target.parameters()) + list(heads.parameters())
    assert [len(g["params"]) for g in fine_tuning_parameter_groups(target, 0, heads=heads)] == [len(every)]
    trained = fine_tuning_parameter_groups(target, 4, heads=heads, train_heads=True)[0]["params"]
    assert {id(p) for p in heads.parameters()} <= {id(p) for p in trained}
    only_fc = fine_tuning_parameter_groups(target, 5)[0]["params"]
    assert {id(p) for p in only_fc} == {id(target.fc.weight), id(target.fc.bias)}
    with pytest.raises(ValueError, match="ft_begin_index"):
        fine_tuning_parameter_groups(target, 6)
    with pytest.raises(ValueError, match="layer1-4 and fc"):
        fine_tuning_parameter_groups(build_target("resnet8", 4), 4)
    with pytest.raises(TypeError, match="model.target"):
        fine_tuning_parameter_groups(TargetWithHeads(target, dict(heads), (0.5,) * 3, (0.25,) * 3), 4)
