"""Data set readers against small fixtures written here in the real on-disk formats."""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
from PIL import Image
from pydantic import ValidationError

from engine.config import ImageDataConfig
from pipelines.datasets import DatasetError, build_split, procedural

# --- CIFAR ----------------------------------------------------------------------------------


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's cPickle wrote its `str` (SHORT_BINSTRING / BINSTRING), as in the
    official batches; a Python 3 pickler writes them as `_codecs.encode(...)` calls."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        short = len(obj) < 256
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj if short
                   else pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)
    dispatch[bytes] = save_python2_str


def python2_pickle(obj) -> bytes:
    """`obj` pickled as the official CIFAR batches are: Python 2, protocol 2, numpy 1's module names."""
    import io
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _pickle(path: Path, obj: dict, bytes_keys: bool | str) -> None:
    """bytes_keys: True as the batches read with encoding="bytes" (the CIFAR web page's recipe) look;
    "python2": the official files' own encoding (their Python 2 `str` keys and names)."""
    if bytes_keys:
        obj = {k.encode(): ([n.encode() for n in v] if k.endswith("names") else v) for k, v in obj.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(python2_pickle(obj) if bytes_keys == "python2" else pickle.dumps(obj, protocol=2))


def _cifar_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    # A known pixel: row 1, column 2 of image 0 is (200, 100, 50); planes are R, G, B, each row-major.
    rows[0, [0 * 1024 + 1 * 32 + 2, 1 * 1024 + 1 * 32 + 2, 2 * 1024 + 1 * 32 + 2]] = [200, 100, 50]
    return rows


def write_cifar10(root: Path, bytes_keys: bool = False) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    written = {"train": ([], []), "test": ([], [])}
    for name, split in [*((f"data_batch_{i}", "train") for i in range(1, 6)), ("test_batch", "test")]:
        rows, labels = _cifar_rows(rng, 3), rng.integers(0, 10, 3).tolist()
        _pickle(folder / name, {"batch_label": name, "labels": labels, "data": rows,
                                "filenames": [f"{name}_{i}.png" for i in range(3)]}, bytes_keys)
        written[split][0].append(rows)
        written[split][1].extend(labels)
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072,
                                      "num_cases_per_batch": 3}, bytes_keys)
    return {k: (np.concatenate(v[0]), v[1]) for k, v in written.items()}


def write_cifar100(root: Path, bytes_keys: bool = False) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    written = {}
    for split, n in [("train", 5), ("test", 4)]:
        rows, fine = _cifar_rows(rng, n), rng.integers(0, 100, n).tolist()
        _pickle(folder / split, {"filenames": [f"{i}.png" for i in range(n)], "batch_label": split,
                                 "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": rows},
                bytes_keys)
        written[split] = (rows, fine)
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                              "coarse_label_names": [f"coarse{i}" for i in range(20)]}, bytes_keys)
    return written


@pytest.mark.parametrize("bytes_keys", [False, True, "python2"])
@pytest.mark.parametrize("dataset,writer,num_classes", [("cifar10", write_cifar10, 10),
                                                        ("cifar100", write_cifar100, 100)])
def test_cifar_pixels_and_labels(tmp_path, dataset, writer, num_classes, bytes_keys):
    written = writer(tmp_path, bytes_keys)
    for split in ("train", "test"):
        s = build_split(ImageDataConfig(dataset=dataset, root=tmp_path), split)
        rows, labels = written[split]
        assert s.images.shape == (len(rows), 32, 32, 3) and s.images.dtype == np.uint8
        assert s.image_size == (32, 32) and s.num_classes == num_classes == len(s.class_names)
        assert s.labels.dtype == np.int64 and s.labels.tolist() == labels
        assert s.images[0, 1, 2].tolist() == [200, 100, 50]  # H, W position and channel order
        np.testing.assert_array_equal(s.images[2, :, :, 1], rows[2, 1024:2048].reshape(32, 32))
    assert s.class_names[:2] == (["class0", "class1"] if dataset == "cifar10" else ["fine0", "fine1"])


@pytest.mark.parametrize("dataset,writer,cls", [("cifar10", write_cifar10, "CIFAR10"),
                                                ("cifar100", write_cifar100, "CIFAR100")])
def test_cifar_matches_torchvision(tmp_path, monkeypatch, dataset, writer, cls):
    writer(tmp_path)
    # torchvision only accepts the official files' md5s; skip that check to read our fixture with it.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    for split in ("train", "test"):
        ours = build_split(ImageDataConfig(dataset=dataset, root=tmp_path), split)
        theirs = getattr(torchvision.datasets, cls)(str(tmp_path), train=split == "train")
        np.testing.assert_array_equal(ours.images, theirs.data)
        assert ours.labels.tolist() == list(theirs.targets) and ours.class_names == theirs.classes


def test_cifar_download_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, train, download))
        write_cifar10(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    with pytest.raises(DatasetError, match="download=true"):
        build_split(ImageDataConfig(dataset="cifar10", root=tmp_path), "train")
    assert calls == []
    s = build_split(ImageDataConfig(dataset="cifar10", root=tmp_path, download=True), "test")
    assert len(s) == 3 and calls == [(str(tmp_path), False, True)]
    build_split(ImageDataConfig(dataset="cifar10", root=tmp_path, download=True), "test")
    assert len(calls) == 1  # files present: no second download


def test_failed_download_is_a_dataset_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "STL10", offline)
    with pytest.raises(DatasetError, match=r"stl10: download into .* failed: RuntimeError"):
        build_split(ImageDataConfig(dataset="stl10", root=tmp_path, download=True), "train")


def test_python2_fixture_is_what_python2_wrote():
    """The official files' encoding, checked on the opcodes: no `_codecs` call, numpy 1's names, bytes as
    Python 2 `str` (read back as str under latin1, as torchvision reads them)."""
    import pickletools
    data = python2_pickle({b"data": np.arange(3, dtype=np.uint8), b"labels": [1, 2], b"label_names": [b"cat"]})
    names = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert {op.name for op, _, _ in pickletools.genops(data)} >= {"SHORT_BINSTRING"}
    assert pickle.loads(data, encoding="latin1")["label_names"] == ["cat"]


class _RunsCode:
    """A pickle that runs a shell command while it loads (its __reduce__ names os.system)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("payload", ["the whole file", "inside a batch"])
def test_cifar_pickle_that_runs_code_is_refused(tmp_path, payload, capsys):
    write_cifar10(tmp_path)
    marker = tmp_path / "ran"
    command = f"touch {marker}"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    evil = (_RunsCode(command) if payload == "the whole file"
            else {"data": np.zeros((1, 3072), np.uint8), "labels": [_RunsCode(command)]})
    batch.write_bytes(pickle.dumps(evil, protocol=2))
    assert pickle.loads(pickle.dumps(_RunsCode("true"), protocol=2)) == 0  # such a payload runs under pickle.load
    with pytest.raises(DatasetError) as error:
        build_split(ImageDataConfig(dataset="cifar10", root=tmp_path), "train")
    message = str(error.value)
    assert "\n" not in message and str(batch) in message and "refused to unpickle" in message
    assert "posix.system" in message
    assert not marker.exists()


def test_corrupt_cifar_batch(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="test_batch"):
        build_split(ImageDataConfig(dataset="cifar10", root=tmp_path), "test")


# --- STL-10 ---------------------------------------------------------------------------------

STL_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_stl10(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Expected NHWC images and 0-based labels; the files hold each channel plane column-major."""
    rng = np.random.default_rng(2)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, n in [("train", 3), ("test", 2)]:
        raw = rng.integers(0, 256, (n, 3 * 96 * 96), dtype=np.uint8)
        # Known pixel (row 1, column 2) of image 0: in a column-major plane it lies at column * 96 + row.
        raw[0, [c * 9216 + 2 * 96 + 1 for c in range(3)]] = [200, 100, 50]
        raw.tofile(folder / f"{split}_X.bin")
        labels = rng.integers(1, 11, n, dtype=np.uint8)
        labels.tofile(folder / f"{split}_y.bin")
        expected = np.empty((n, 96, 96, 3), dtype=np.uint8)
        for c in range(3):
            expected[..., c] = raw[:, c * 9216:(c + 1) * 9216].reshape(n, 96, 96).transpose(0, 2, 1)
        written[split] = (expected, labels.astype(np.int64) - 1)
    (folder / "class_names.txt").write_text("\n".join(STL_CLASSES) + "\n")
    return written


def test_stl10_pixels_and_labels(tmp_path, monkeypatch):
    written = write_stl10(tmp_path)
    monkeypatch.setattr(torchvision.datasets.STL10, "_check_integrity", lambda self: True)
    for split in ("train", "test"):
        s = build_split(ImageDataConfig(dataset="stl10", root=tmp_path), split)
        expected, labels = written[split]
        np.testing.assert_array_equal(s.images, expected)
        assert s.images[0, 1, 2].tolist() == [200, 100, 50]  # H, W position and channel order
        assert s.labels.tolist() == labels.tolist() and s.image_size == (96, 96)
        assert s.class_names == STL_CLASSES and s.num_classes == 10
        theirs = torchvision.datasets.STL10(str(tmp_path), split=split)
        for i in range(len(theirs)):
            img, label = theirs[i]
            np.testing.assert_array_equal(s.images[i], np.asarray(img))
            assert s.labels[i] == label


def test_stl10_truncated_file(tmp_path):
    write_stl10(tmp_path)
    x = tmp_path / "stl10_binary" / "test_X.bin"
    x.write_bytes(x.read_bytes()[:-5])
    with pytest.raises(DatasetError, match="test_X.bin"):
        build_split(ImageDataConfig(dataset="stl10", root=tmp_path), "test")


# --- VOC 2007 -------------------------------------------------------------------------------

def _annotation(objects: list[tuple[str, int]]) -> str:
    objs = "".join(f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
                   f"<difficult>{d}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                   f"<ymax>9</ymax></bndbox></object>" for n, d in objects)
    return f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename>{objs}</annotation>"


def write_voc(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True)
    images = {"000005": ([("dog", 0), ("person", 1)], (40, 30)),  # the difficult person is ignored
              "000007": ([("cat", 0), ("cat", 0), ("chair", 0)], (50, 20)),
              "000009": ([("car", 0), ("tvmonitor", 0)], (32, 32))}
    for image_id, (objects, (w, h)) in images.items():
        Image.new("RGB", (w, h), (255, 0, 0)).save(base / "JPEGImages" / f"{image_id}.jpg")
        (base / "Annotations" / f"{image_id}.xml").write_text(_annotation(objects))
    (base / "ImageSets/Main/trainval.txt").write_text("000005\n000007\n")
    (base / "ImageSets/Main/test.txt").write_text("000009\n")
    return base


def test_voc_multilabel(tmp_path):
    write_voc(tmp_path)
    train = build_split(ImageDataConfig(dataset="voc2007", root=tmp_path, image_size=64), "train")
    assert train.multilabel and train.labels.dtype == np.float32 and train.labels.shape == (2, 20)
    names = train.class_names
    assert len(names) == 20 and names[0] == "aeroplane" and names[-1] == "tvmonitor"
    assert [names[j] for j in np.flatnonzero(train.labels[0])] == ["dog"]
    assert [names[j] for j in np.flatnonzero(train.labels[1])] == ["cat", "chair"]
    assert train.image_size == (64, 64) and [Path(f).name for f in train.files] == ["000005.jpg", "000007.jpg"]
    img = train.load_image(1)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img[..., 0].min() > 200

    test = build_split(ImageDataConfig(dataset="voc2007", root=tmp_path), "test")
    assert test.image_size == (224, 224) and test.load_image(0).shape == (224, 224, 3)
    assert [names[j] for j in np.flatnonzero(test.labels[0])] == ["car", "tvmonitor"]


def test_voc_malformed_xml_names_the_file(tmp_path):
    base = write_voc(tmp_path)
    (base / "Annotations" / "000007.xml").write_text("<annotation><object><name>cat</name></annotation>")
    with pytest.raises(DatasetError, match="000007.xml"):
        build_split(ImageDataConfig(dataset="voc2007", root=tmp_path), "train")


def test_voc_missing_jpeg(tmp_path):
    base = write_voc(tmp_path)
    (base / "JPEGImages" / "000009.jpg").unlink()
    with pytest.raises(DatasetError, match="000009.jpg"):
        build_split(ImageDataConfig(dataset="voc2007", root=tmp_path), "test")


# --- common ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10", "voc2007"])
def test_missing_root_names_the_path(tmp_path, dataset):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        build_split(ImageDataConfig(dataset=dataset, root=root), "train")
    message = str(err.value)
    assert str(root) in message and "download=true" in message and "\n" not in message


def test_missing_file_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"cifar10: missing \S*cifar-10-batches-py/data_batch_3; unpack https:"):
        build_split(ImageDataConfig(dataset="cifar10", root=tmp_path), "train")


def test_limit_cuts_train_only(tmp_path):
    write_cifar10(tmp_path)
    cfg = ImageDataConfig(dataset="cifar10", root=tmp_path, limit=4)
    assert len(build_split(cfg, "train")) == 4 and len(build_split(cfg, "test")) == 3


# --- procedural -----------------------------------------------------------------------------

def proc_cfg(root: Path, **options) -> ImageDataConfig:
    return ImageDataConfig(dataset="procedural", root=root, procedural={"train_size": 60, "test_size": 40, **options})


def test_procedural_shapes_and_labelings(tmp_path):
    sets = {label: build_split(proc_cfg(tmp_path, label=label), "train") for label in procedural.LABELINGS}
    counts = {label: s.num_classes for label, s in sets.items()}
    assert counts == {"shape": 6, "object": 36, "object_warmth": 12, "object_size": 18, "scene": 12}
    for s in sets.values():
        assert s.images.shape == (60, 32, 32, 3) and s.images.dtype == np.uint8 and s.image_size == (32, 32)
        assert s.labels.dtype == np.int64 and len(s.class_names) == s.num_classes
        assert 0 <= s.labels.min() and s.labels.max() < s.num_classes
        np.testing.assert_array_equal(s.images, sets["shape"].images)  # one image set, every labeling
    n_colours, shape = len(procedural.COLOURS), sets["shape"]
    np.testing.assert_array_equal(sets["object"].labels // n_colours, sets["shape"].labels)
    for label, per_shape in procedural.CLASSES_PER_SHAPE.items():  # every labeling that contains the shape
        np.testing.assert_array_equal(sets[label].labels // per_shape, sets["shape"].labels)
    warmth = sets["object_warmth"]
    for i in range(len(warmth.labels)):  # "warm star" holds a warm-coloured star
        colour = sets["object"].class_names[sets["object"].labels[i]].split()[0]
        assert warmth.class_names[warmth.labels[i]] == \
            f"{'warm' if colour in procedural.WARM else 'cool'} {shape.class_names[shape.labels[i]]}"
    sized = sets["object_size"]
    for i in range(len(sized.labels)):  # "large star" holds a star whose radius is in the top third of 5..9 px
        u = np.random.default_rng([0, procedural.SPLIT_CODES["train"], i]).random(procedural.N_UNIFORM)
        radius = 5 + 4 * u[procedural.U_RADIUS]
        size = "small" if radius < 5 + 4 / 3 else "medium" if radius < 5 + 8 / 3 else "large"
        assert sized.class_names[sized.labels[i]] == f"{size} {shape.class_names[shape.labels[i]]}"
    obj = sets["object"]
    assert obj.class_names[obj.labels[0]].endswith(" " + shape.class_names[shape.labels[0]])  # "red circle"
    scene = sets["scene"]
    assert scene.class_names[:2] == ["hstripes dark", "hstripes light"]
    assert len(build_split(proc_cfg(tmp_path), "test")) == 40


def test_procedural_deterministic_by_seed(tmp_path):
    a = procedural.generate(0, "train", np.arange(30))
    b = procedural.generate(0, "train", np.arange(30))
    c = procedural.generate(1, "train", np.arange(30))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["images"], c["images"])
    # A sample depends only on its id: offsets and shorter splits pick the same images.
    shifted = procedural.generate(0, "train", np.arange(10, 20))
    np.testing.assert_array_equal(shifted["images"], a["images"][10:20])
    s = build_split(proc_cfg(tmp_path / "other", seed=0, offset=10, train_size=20), "train")
    np.testing.assert_array_equal(s.images, a["images"][10:30])


def test_procedural_splits_disjoint(tmp_path):
    train = build_split(proc_cfg(tmp_path, train_size=200, test_size=200), "train").images.reshape(200, -1)
    test = build_split(proc_cfg(tmp_path, train_size=200, test_size=200), "test").images.reshape(200, -1)
    assert not (train[:, None, :64] == test[None, :, :64]).all(axis=2).any()


def test_procedural_class_balance():
    a = procedural.generate(0, "train", np.arange(3000))
    for key, k in [("shape", 6), ("colour", 6), ("background", 6), ("tone", 2)]:
        counts = np.bincount(a[key], minlength=k)
        assert counts.min() > 0.8 * 3000 / k and counts.max() < 1.2 * 3000 / k, (key, counts)
    objects = np.bincount(a["shape"] * 6 + a["colour"], minlength=36)
    assert objects.min() > 0.5 * 3000 / 36 and objects.max() < 1.5 * 3000 / 36


def test_procedural_label_only_in_the_drawn_shape():
    """Changing the shape kind or colour changes pixels only where a shape is drawn (no other leak)."""
    u = np.random.default_rng(0).random((50, procedural.N_UNIFORM)).astype(np.float32)
    no_noise = np.zeros((50, 32, 32, 3), dtype=np.float32)
    base = procedural.render(u, no_noise)
    for column in (procedural.U_SHAPE, procedural.U_COLOUR):
        other = u.copy()
        other[:, column] = (other[:, column] + 0.5) % 1  # another kind / colour, all else equal
        changed = procedural.render(other, no_noise)
        background = (procedural._shape_coverage(u) == 0) & (procedural._shape_coverage(other) == 0)
        assert (base != changed).any()
        np.testing.assert_array_equal(base[background], changed[background])
    assert base.astype(np.float32).std() > 20  # not a blank canvas


@pytest.mark.parametrize("options,match", [({"size": 3}, "'size'"), ({"label": "colour"}, "label"),
                                           ({"train_size": -1}, "train_size"), ({"seed": "x"}, "seed")])
def test_procedural_bad_options(tmp_path, options, match):
    with pytest.raises(ValidationError, match=match):  # the data section's schema checks them, before any work
        ImageDataConfig(dataset="procedural", root=tmp_path, procedural=options)


def test_procedural_cache_reused_and_corrupt_regenerated(tmp_path, monkeypatch):
    calls = []
    real = procedural.generate

    def counting(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(procedural, "generate", counting)
    first = build_split(proc_cfg(tmp_path), "train")
    cached = list((tmp_path / "procedural").iterdir())
    assert calls == ["train"] and len(cached) == 1 and cached[0].suffix == ".npz"

    again = build_split(proc_cfg(tmp_path, label="object"), "train")  # other labeling, same file
    assert calls == ["train"]
    np.testing.assert_array_equal(again.images, first.images)

    cached[0].write_bytes(b"PK\x03\x04 truncated")
    regenerated = build_split(proc_cfg(tmp_path), "train")
    assert calls == ["train", "train"]
    np.testing.assert_array_equal(regenerated.images, first.images)
    assert list((tmp_path / "procedural").iterdir()) == cached  # rewritten in place, no tmp left behind
    build_split(proc_cfg(tmp_path), "train")
    assert calls == ["train", "train"]
    assert first.fingerprint == regenerated.fingerprint


def test_procedural_limit(tmp_path):
    cfg = proc_cfg(tmp_path, train_size=50)
    cfg.limit = 7
    assert len(build_split(cfg, "train")) == 7 and len(build_split(cfg, "test")) == 40
