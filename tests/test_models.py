"""Target networks and auxiliary heads: shapes, parameter counts by formula, interfaces."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from models.heads import HEADS, LinearHead, TransferModule, head_names
from models.network import Normalize, TargetWithHeads, count_parameters
from models.registry import build_head, build_target, target_names
from models.targets.base import Target

CIFAR_DEPTHS = {"resnet8": 1, "resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
IMAGENET = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]), "resnet50": ("bottleneck", [3, 4, 6, 3])}
VGG16_BLOCKS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
RESNET3D = ["resnet3d_10", "resnet3d_18", "resnet3d_34", "resnet3d_50", "resnet3d_10_w16",
            "resnet3d_10_w16_small_clips", "resnet3d_10_w16_full_res"]  # shapes and counts: test_models3d.py
ALL_TARGETS = [*CIFAR_DEPTHS, *IMAGENET, "vgg16_bn"]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


# ---- parameter-count formulas, written from the architecture descriptions ----

def conv(k: int, cin: int, cout: int, bias: bool = False) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c  # weight + bias; running stats are buffers


def linear(i: int, o: int) -> int:
    return i * o + o


def cifar_resnet_params(n: int, num_classes: int, option_b: bool = False) -> int:
    total = conv(3, 3, 16) + bn(16)
    cin = 16
    for c in (16, 32, 64):
        for _ in range(n):
            total += conv(3, cin, c) + bn(c) + conv(3, c, c) + bn(c)
            if cin != c and option_b:
                total += conv(1, cin, c) + bn(c)
            cin = c
    return total + linear(64, num_classes)


def imagenet_resnet_params(block: str, layers: list[int], num_classes: int) -> int:
    total = conv(7, 3, 64) + bn(64)
    cin = 64
    for i, blocks in enumerate(layers):
        planes = 64 * 2**i
        for b in range(blocks):
            stride = 2 if i > 0 and b == 0 else 1
            if block == "basic":
                cout = planes
                total += conv(3, cin, planes) + bn(planes) + conv(3, planes, planes) + bn(planes)
            else:
                cout = 4 * planes
                total += conv(1, cin, planes) + bn(planes) + conv(3, planes, planes) + bn(planes)
                total += conv(1, planes, cout) + bn(cout)
            if stride != 1 or cin != cout:
                total += conv(1, cin, cout) + bn(cout)
            cin = cout
    return total + linear(cin, num_classes)


def vgg16_bn_params(num_classes: int) -> int:
    total, cin = 0, 3
    for block in VGG16_BLOCKS:
        for c in block:
            total += conv(3, cin, c, bias=True) + bn(c)
            cin = c
    return total + linear(512, num_classes)


def transfer_module_params(stage_channels: list[int], width: int, num_classes: int) -> int:
    mid = width // 2

    def branch(c: int) -> int:
        return conv(1, c, mid, True) + bn(mid) + conv(3, mid, mid, True) + bn(mid) + conv(1, mid, width, True) + bn(width)

    return sum(branch(c) for c in stage_channels) + linear(width, num_classes)


# ---- shapes ----

def input_size(name: str) -> int:
    return 64 if name in IMAGENET else 32


def expected_stages(name: str) -> list[tuple[int, int]]:
    """(channels, spatial size) per stage for the test input size."""
    if name in CIFAR_DEPTHS:
        return [(16, 32), (32, 16), (64, 8)]
    if name == "vgg16_bn":
        return [(64, 32), (128, 16), (256, 8), (512, 4), (512, 2)]
    e = 4 if IMAGENET[name][0] == "bottleneck" else 1
    return [(64 * e, 16), (128 * e, 8), (256 * e, 4), (512 * e, 2)]


def test_registry_lists_all_targets():
    assert set(target_names()) == set(ALL_TARGETS + RESNET3D)


def test_head_registry():
    assert head_names() == ["linear", "transfer_module"] == sorted(HEADS)


@pytest.mark.parametrize("name", ALL_TARGETS)
def test_target_shapes_and_heads(name: str):
    torch.manual_seed(0)
    target = build_target(name, num_classes=7).eval()
    x = torch.randn(2, 3, input_size(name), input_size(name))
    with torch.no_grad():
        stages = target.forward_stages(x)
        assert [(s.shape[1], s.shape[2]) for s in stages] == expected_stages(name)
        assert target.stage_channels == [c for c, _ in expected_stages(name)]
        pooled = target.pool(stages[-1])
        assert pooled.shape == (2, target.stage_channels[-1])
        logits = target(x)
        assert logits.shape == (2, 7)
        assert torch.allclose(logits, target.classifier(pooled))
        for kind in ("linear", "transfer_module"):
            head = build_head(kind, target, 11).eval()
            assert head(stages, pooled).shape == (2, 11)
    assert isinstance(target, Target) and target.spatial_dims == 2
    assert isinstance(target.classifier, nn.Linear)
    assert target.classifier is getattr(target, target.classifier_name)
    # the reference's transfer-module widths: last stage width for CIFAR/VGG targets, 1000 for ImageNet ResNets
    assert target.transfer_module_width == (1000 if name in IMAGENET else target.stage_channels[-1])
    target.reset_classifier(5)
    assert isinstance(target.classifier, nn.Linear) and target(x).shape == (2, 5)
    assert [k for k in target.state_dict() if target.classifier_name + "." in k] == [
        f"{target.classifier_name}.weight", f"{target.classifier_name}.bias"]


# ---- parameter counts ----

@pytest.mark.parametrize("name", list(CIFAR_DEPTHS))
def test_cifar_resnet_param_count(name: str):
    target = build_target(name, num_classes=10)
    assert count_parameters(target) == cifar_resnet_params(CIFAR_DEPTHS[name], 10)


def test_resnet20_shortcut_options():
    # Option A (zero-padding shortcut, the default) is parameter-free: 269,722 parameters.
    # The often-quoted 272,474 is the option-B count (1x1 projections at the two downsampling blocks).
    assert cifar_resnet_params(3, 10) == 269_722
    assert cifar_resnet_params(3, 10, option_b=True) == 272_474
    assert count_parameters(build_target("resnet20", 10)) == 269_722
    assert count_parameters(build_target("resnet20", 10, shortcut="B")) == 272_474


@pytest.mark.parametrize("name,published", [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)])
def test_imagenet_resnet_param_count(name: str, published: int):
    assert imagenet_resnet_params(*IMAGENET[name], 1000) == published
    assert count_parameters(build_target(name, num_classes=1000)) == published
    assert count_parameters(build_target(name, num_classes=20)) == imagenet_resnet_params(*IMAGENET[name], 20)


def test_vgg16_bn_param_count():
    assert count_parameters(build_target("vgg16_bn", num_classes=10)) == vgg16_bn_params(10)
    assert vgg16_bn_params(10) == 14_728_266


@pytest.mark.parametrize(
    "name,target_classes,source_classes,channels,width",
    [
        ("resnet20", 10, 1000, [16, 32, 64], 64),
        ("resnet32", 100, 365, [16, 32, 64], 64),
        ("resnet18", 20, 365, [64, 128, 256, 512], 1000),
        ("resnet50", 20, 1000, [256, 512, 1024, 2048], 1000),
        ("vgg16_bn", 10, 1000, [64, 128, 256, 512, 512], 512),
    ],
)
def test_transfer_module_param_count(name, target_classes, source_classes, channels, width):
    target = build_target(name, num_classes=target_classes)
    assert target.transfer_module_width == width
    head = build_head("transfer_module", target, source_classes)
    assert isinstance(head, TransferModule)
    assert count_parameters(head) == transfer_module_params(channels, width, source_classes)


def test_linear_head_param_count():
    head = build_head("linear", build_target("resnet20", 10), 1000)
    assert isinstance(head, LinearHead)
    assert count_parameters(head) == linear(64, 1000)


# ---- interfaces ----

def test_torchvision_resnet18_weights_load_strict():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    ours = build_target("resnet18", num_classes=1000).eval()
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-5)


def test_unknown_target_lists_known_names():
    with pytest.raises(KeyError) as err:
        build_target("resnet9000", num_classes=10)
    for name in ALL_TARGETS:
        assert name in str(err.value)


def test_unknown_head_kind():
    with pytest.raises(ValueError, match="linear, transfer_module"):
        build_head("mlp", build_target("resnet8", 10), 10)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 3, 3, 5, 4)])  # NCHW image, NCTHW clip (T = C: no accidental broadcast)
def test_normalize_any_rank(shape):
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.4, 0.8)
    x = torch.rand(*shape)
    expected = torch.empty_like(x)
    for c in range(3):  # channel c of every sample, frame and position
        expected[:, c] = (x[:, c] - mean[c]) / std[c]
    assert torch.allclose(Normalize(mean, std)(x), expected)


def test_normalize_wrong_channels():
    with pytest.raises(ValueError, match="expects"):
        Normalize((0.5,) * 3, (0.2,) * 3)(torch.rand(2, 4, 8, 8))


@pytest.mark.parametrize("head_kind", ["linear", "transfer_module"])
@pytest.mark.parametrize("sources", [{}, {"imagenet": 1000}, {"imagenet": 1000, "places365": 365}])
def test_target_with_any_number_of_heads(head_kind: str, sources: dict[str, int]):
    target = build_target("resnet8", num_classes=10)
    heads = {name: build_head(head_kind, target, n) for name, n in sources.items()}
    model = TargetWithHeads(target, heads, MEAN, STD).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(images)
        plain = target((images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    assert torch.allclose(out.logits, plain, atol=1e-6)
    assert {k: tuple(v.shape) for k, v in out.aux.items()} == {k: (2, n) for k, n in sources.items()}
    deployed = model.deployed_state_dict()
    assert deployed.keys() == target.state_dict().keys()
    assert not any(k.startswith("heads") for k in deployed)
    assert any(k.startswith("heads.") for k in model.state_dict()) == bool(sources)


def test_transfer_module_convs_follow_the_targets_init_rule():
    """ImageNet-style ResNets: kaiming_normal_(fan_out) on the auxiliary convs, as the reference's init loop did."""
    from models.registry import build_head
    torch.manual_seed(0)
    head = build_head("transfer_module", build_target("resnet18", 10), 20)
    conv = head.branches[0][3]  # the 3x3 conv of the first branch: fan_out = 500 * 9
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.weight.std().item() == pytest.approx((2.0 / (conv.out_channels * 9)) ** 0.5, rel=0.05)
    cifar = build_head("transfer_module", build_target("resnet20", 10), 20).branches[0][3]
    bound = 1 / (cifar.in_channels * 9) ** 0.5  # PyTorch's default: kaiming_uniform(a=sqrt(5)) -> U(-b, b)
    assert cifar.weight.abs().max().item() <= bound
