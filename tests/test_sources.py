"""Frozen sources: every weight format loads exactly, nothing ever trains, errors are one line."""
from __future__ import annotations

import hashlib
import pickle
import sys
import types

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from engine.config import ResizeConfig, SourceConfig
from models.sources import SourceError, load_source

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_network(url, dst, *args, **kwargs):
        raise ConnectionError(f"no network in tests ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return home


def random_resnet18(num_classes: int, seed: int = 0) -> nn.Module:
    """A resnet18 whose BatchNorm layers are not identity, so a wrong load or BN mode shows."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=num_classes)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
            m.num_batches_tracked.fill_(1000)
    return net.eval()


@pytest.fixture(scope="module")
def places_net() -> nn.Module:
    return random_resnet18(365)


def reference(net: nn.Module, x: torch.Tensor, size: tuple[int, int], mean=MEAN, std=STD) -> torch.Tensor:
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return net(x)


def cfg(**kw) -> SourceConfig:
    kw.setdefault("name", "src")
    kw.setdefault("arch", "resnet18")
    return SourceConfig(**kw)


def save_csail(net: nn.Module, path) -> None:
    torch.save({"epoch": 90, "arch": "resnet18", "best_prec1": 54.7,
                "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, path)


def assert_one_line_naming(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg


# ---------------------------------------------------------------- formats


def test_places365_checkpoint_predicts_exactly(tmp_path, places_net):
    path = tmp_path / "resnet18_places365.pth.tar"
    save_csail(places_net, path)
    src = load_source(cfg(format="places365", weights=str(path)))
    assert src.num_classes == 365 and src.weights_path == path
    x = torch.rand(2, 3, 16, 16)
    assert src.input_size(16, 16) == (37, 37)  # int(16 * 7/3)
    assert src.input_size(32, 32) == (74, 74)
    out = src(x)
    assert out.dtype == torch.float32 and out.shape == (2, 365)
    assert torch.equal(out, reference(places_net, x, (37, 37)))


def test_places365_default_path_in_hub_dir(torch_home, places_net):
    path = torch_home / "hub" / "checkpoints" / "resnet18_places365.pth.tar"
    path.parent.mkdir(parents=True)
    save_csail(places_net, path)
    src = load_source(cfg(format="places365", resize=ResizeConfig(size=24)))
    assert src.weights_path == path
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(src(x), reference(places_net, x, (24, 24)))


def test_places365_missing_and_undownloadable(torch_home):
    with pytest.raises(SourceError) as err:
        load_source(cfg(format="places365"), index=0)
    path = torch_home / "hub" / "checkpoints" / "resnet18_places365.pth.tar"
    assert_one_line_naming(err, "'src'", str(path), "http://places2.csail.mit.edu/models_places365/resnet18_places365.pth.tar",
                           "sources.0.weights")


class _Py2Str:
    def __init__(self, data: bytes):
        self.data = data


class _Py2Pickler(pickle._Pickler):
    """Writes _Py2Str as a Python-2 `str` (SHORT_BINSTRING), as old CSAIL checkpoints hold."""
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2str(self, obj):
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj.data)]) + obj.data)

    dispatch[_Py2Str] = _save_py2str


def test_python2_legacy_pickle_loads(tmp_path, places_net):
    path = tmp_path / "resnet18_places365.pth.tar"
    obj = {"arch": _Py2Str(b"resnet18"), "note": _Py2Str(b"caf\xe9"),
           "state_dict": {"module." + k: v for k, v in places_net.state_dict().items()}}
    py2 = types.SimpleNamespace(Pickler=_Py2Pickler, dump=pickle.dump, __name__="py2pickle")
    torch.save(obj, path, pickle_module=py2, pickle_protocol=2, _use_new_zipfile_serialization=False)
    with pytest.raises(UnicodeDecodeError):  # the failure the latin1 retry exists for
        torch.load(path, weights_only=True)
    src = load_source(cfg(format="places365", weights=str(path)))
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(src(x), reference(places_net, x, (28, 28)))


def test_torchvision_enum_from_hub_dir(torch_home):
    net = random_resnet18(1000, seed=1)
    url = torchvision.models.get_model_weights("resnet18")["IMAGENET1K_V1"].url
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert url.endswith(path.name)
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    src = load_source(cfg(format="torchvision", weights="IMAGENET1K_V1"))
    assert src.weights_path == path and src.num_classes == 1000
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(src(x), reference(net, x, (28, 28)))


def test_torchvision_enum_missing_without_network(torch_home):
    with pytest.raises(SourceError) as err:
        load_source(cfg(name="imagenet", format="torchvision", weights="IMAGENET1K_V1"))
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert_one_line_naming(err, "'imagenet'", str(path), "https://download.pytorch.org/models/resnet18-f37072fd.pth",
                           "download it there", "sources.<i>.weights to a local file")
    assert not path.exists()


def test_torchvision_enum_downloads_when_missing(torch_home, monkeypatch):
    net = random_resnet18(1000, seed=2)
    calls = []

    def fake_download(url, dst, *args, **kwargs):
        calls.append(url)
        torch.save(net.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    src = load_source(cfg(format="torchvision", weights="IMAGENET1K_V1"))
    assert calls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    assert src.weights_path == torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(src(x), reference(net, x, (28, 28)))


def test_torchvision_state_dict_path_and_unknown_enum(tmp_path, places_net):
    path = tmp_path / "r18.pth"
    torch.save(places_net.state_dict(), path)
    src = load_source(cfg(format="torchvision", weights=str(path)))
    assert src.num_classes == 365
    with pytest.raises(SourceError) as err:
        load_source(cfg(format="torchvision", weights="IMAGENET9K_V7"))
    assert_one_line_naming(err, "IMAGENET9K_V7", "IMAGENET1K_V1")


def test_checkpoint_format_module_prefix(tmp_path):
    net = random_resnet18(10, seed=3)
    path = tmp_path / "plain.pt"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    src = load_source(cfg(format="checkpoint", weights=str(path), mean=mean, std=std, resize=ResizeConfig(scale=2.0)))
    assert src.num_classes == 10  # read from fc.weight
    x = torch.rand(2, 3, 10, 10)
    assert torch.equal(src(x), reference(net, x, (20, 20), mean, std))


def test_checkpoint_format_registry_arch(tmp_path, monkeypatch):
    class Tiny(nn.Module):
        def __init__(self, num_classes: int):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, num_classes)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))

    def build_target(name, num_classes):
        if name != "tiny":
            raise KeyError(name)
        return Tiny(num_classes)

    monkeypatch.setitem(sys.modules, "models.registry", types.SimpleNamespace(build_target=build_target))
    torch.manual_seed(4)
    net = Tiny(7).eval()
    path = tmp_path / "tiny.pt"
    torch.save({"arch": "tiny", "num_classes": 7, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, path)
    src = load_source(cfg(format="checkpoint", arch="tiny", weights=str(path), resize=ResizeConfig(size=8)))
    x = torch.rand(3, 3, 8, 8)
    assert src.num_classes == 7
    assert torch.equal(src(x), reference(net, x, (8, 8)))
    with pytest.raises(SourceError) as err:
        load_source(cfg(format="checkpoint", arch="nonesuch", weights=str(path)))
    assert_one_line_naming(err, "'nonesuch'")


# ---------------------------------------------------------------- frozen


def test_source_never_trains(tmp_path, places_net):
    path = tmp_path / "resnet18_places365.pth.tar"
    save_csail(places_net, path)
    src = load_source(cfg(format="places365", weights=str(path)))
    before = {k: v.clone() for k, v in src.state_dict().items()}
    assert all(not p.requires_grad for p in src.parameters())

    parent = nn.ModuleDict({"src": src, "head": nn.Linear(3, 3)})
    for _ in range(3):
        parent.train()
        src.train(True)
        assert not src.training and not any(m.training for m in src.modules())
        assert parent["head"].training
        out = src(torch.rand(4, 3, 8, 8) * 3 - 1)  # off-distribution data would move BN stats
        assert out.grad_fn is None and not out.requires_grad

    after = src.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # The source output enters a loss together with a trainable layer: grads reach only the layer.
    layer = nn.Linear(365, 365)
    x = torch.rand(2, 3, 8, 8)
    teacher = src(x)
    loss = (layer(teacher) * teacher).sum() + F.kl_div(F.log_softmax(layer(teacher), 1), F.softmax(teacher, 1),
                                                     reduction="batchmean")
    loss.backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in src.parameters())


# ---------------------------------------------------------------- fingerprint


def test_fingerprint(tmp_path, places_net):
    path = tmp_path / "resnet18_places365.pth.tar"
    save_csail(places_net, path)
    base = cfg(format="places365", weights=str(path))
    src = load_source(base)
    fp = src.fingerprint()
    assert len(fp) == 64 and src.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_source(base).fingerprint() == fp  # identical reload

    resized = load_source(base.model_copy(update={"resize": ResizeConfig(size=64)}))
    assert resized.fingerprint() != fp
    assert load_source(base.model_copy(update={"mean": (0.5, 0.456, 0.406)})).fingerprint() != fp
    assert load_source(base.model_copy(update={"std": (0.2, 0.224, 0.225)})).fingerprint() != fp

    other = random_resnet18(365, seed=5)
    save_csail(other, path)  # same path, new content
    changed = load_source(base)
    assert changed.weights_sha256 != src.weights_sha256 and changed.fingerprint() != fp


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(SourceError) as err:
        load_source(cfg(format="checkpoint", weights=str(path)))
    assert_one_line_naming(err, str(path), "not found")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(SourceError) as err:
        load_source(cfg(format="places365", weights=str(path)))
    assert_one_line_naming(err, str(path))


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(SourceError) as err:
        load_source(cfg(format="checkpoint", weights=str(path)))
    assert_one_line_naming(err, str(path), "state_dict")


@pytest.mark.parametrize("arch, num_classes, expect", [
    ("resnet34", None, "missing keys"),       # deeper net: layers absent from the file
    ("vgg11", None, "keys"),                  # other family: nothing lines up
    ("resnet18", 10, "size mismatch"),        # wrong head size
])
def test_wrong_arch(tmp_path, places_net, arch, num_classes, expect):
    path = tmp_path / "resnet18_places365.pth.tar"
    save_csail(places_net, path)
    with pytest.raises(SourceError) as err:
        load_source(cfg(format="places365", arch=arch, weights=str(path), num_classes=num_classes))
    assert_one_line_naming(err, str(path), expect)


def test_unknown_torchvision_arch(tmp_path, places_net):
    path = tmp_path / "w.pth"
    torch.save(places_net.state_dict(), path)
    with pytest.raises(SourceError) as err:
        load_source(cfg(format="places365", arch="resnet_nonesuch", weights=str(path)))
    assert_one_line_naming(err, "resnet_nonesuch")

