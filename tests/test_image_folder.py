"""Your own images: an ImageFolder tree written here (various sizes and modes) read, trained on for an epoch,
and predicted from files, folders and globs; engine.predict goes on past an unreadable file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from PIL import Image

from engine import predict as predict_module
from engine.config import ImageDataConfig, load_config
from engine.trainer import train
from pipelines.datasets import DatasetError, build_split

CLASSES = ["cat", "dog", "owl"]  # sorted: labels 0, 1, 2
COLOURS = {"cat": (220, 40, 40), "dog": (40, 200, 60), "owl": (50, 60, 210)}
# (file name, PIL mode, (width, height)): any size, grey, palette, RGBA and CMYK next to RGB.
IMAGES = [("a.jpg", "RGB", (40, 30)), ("b.png", "L", (20, 50)), ("c.PNG", "RGBA", (64, 64)),
          ("d.bmp", "P", (33, 17)), ("sub/e.jpeg", "CMYK", (24, 24)), ("f.tif", "RGB", (16, 16))]


def solid(mode: str, size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", size, colour)
    return img.quantize(8) if mode == "P" else img.convert(mode)


def write_tree(root: Path, splits=("train", "test"), images=IMAGES) -> Path:
    """Each class's images are one solid colour (easy to learn, and checkable after the resize)."""
    for split in splits:
        for name in CLASSES:
            for file, mode, size in images:
                path = root / split / name / file
                path.parent.mkdir(parents=True, exist_ok=True)
                solid(mode, size, COLOURS[name]).save(path)
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1")  # desktop clutter: ignored
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden folder: not a class
    return root


def data_cfg(root: Path, **kw) -> ImageDataConfig:
    return ImageDataConfig(dataset="image_folder", root=root, image_size=kw.pop("image_size", 16), **kw)


def test_classes_labels_and_pixels_from_any_size_and_mode(tmp_path):
    root = write_tree(tmp_path / "images")
    for split in ("train", "test"):
        s = build_split(data_cfg(root), split)
        assert s.class_names == CLASSES and s.num_classes == 3 and len(s) == 3 * len(IMAGES)
        assert s.labels.tolist() == [i for i in range(3) for _ in IMAGES]
        modes = {file: mode for file, mode, _ in IMAGES}
        for i, path in enumerate(s.files):
            name, file = Path(path).relative_to(root / split).as_posix().split("/", 1)
            assert name == CLASSES[s.labels[i]]
            pixels = s.load_image(i)
            assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
            if modes[file] == "L":  # grey: the colour's luma in every channel
                assert np.ptp(pixels, axis=2).max() == 0
            else:  # JPEG, palette and CMYK round trips move a solid colour a little
                assert np.abs(pixels.reshape(-1, 3).mean(0) - COLOURS[name]).max() < 12, (path, modes[file])


@pytest.mark.parametrize("damage, named", [
    (lambda r: None, "{root}/nothing not found"),
    (lambda r: __import__("shutil").rmtree(r / "test"), "{root}/test not found"),
    (lambda r: [p.unlink() for p in (r / "test" / "dog").iterdir()], "{root}/test/dog holds no images"),
    (lambda r: (r / "train" / "owl" / "notes.txt").write_text("x"), "{root}/train/owl/notes.txt is not an image"),
    (lambda r: (r / "test" / "cat" / "a.jpg").write_text("not a jpeg"), "{root}/test/cat/a.jpg: not an image PIL"),
    (lambda r: (r / "test" / "cat" / "z.png").write_bytes(b""), "{root}/test/cat/z.png: not an image PIL"),
    (lambda r: Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(r / "test" / "cat" / "deep.png"),
     "{root}/test/cat/deep.png: a mode-I;16 image (more than 8 bits a channel)"),
    (lambda r: (r / "test" / "emu").mkdir(), "only in test: emu"),
    (lambda r: __import__("shutil").rmtree(r / "test" / "owl"), "only in train: owl"),
    (lambda r: (r / "train" / "x.jpg").write_bytes(b""), "{root}/train/x.jpg: files go inside a class folder"),
])
def test_bad_trees_are_one_line_naming_the_path(tmp_path, damage, named):
    root = write_tree(tmp_path / "images", images=IMAGES[:2])
    damage(root)
    cfg = data_cfg(tmp_path / "nothing" if "nothing" in named else root)
    with pytest.raises(DatasetError) as error:
        for split in ("train", "test"):
            build_split(cfg, split)
    message = str(error.value)
    assert "\n" not in message and named.format(root=root).replace(f"{root}/nothing", f"{tmp_path}/nothing") in message


def test_own_val_folder_is_the_validation_split(tmp_path):
    root = write_tree(tmp_path / "images", splits=("train", "val", "test"), images=IMAGES[:2])
    val = build_split(data_cfg(root), "val")
    assert val.split == "val" and len(val) == 6 and all("/val/" in f for f in val.files)
    with pytest.raises(DatasetError, match="val_fraction"):
        build_split(data_cfg(root, val_fraction=0.5), "val")


@pytest.fixture
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_one_epoch_exports_class_names_and_predicts_folders(tmp_path, capsys, fresh_accelerate_state):
    root = write_tree(tmp_path / "images", splits=("train", "val", "test"))
    config = tmp_path / "custom.yaml"
    config.write_text((Path(__file__).parents[1] / "configs/custom/image_folder.yaml").read_text())
    cfg = load_config(config, [f"data.root={root}", "data.image_size=16", "data.views=2", "data.batch_size=6",
                               "data.workers=0", "model.target=resnet8", "train.epochs=1", "train.progress=false",
                               f"run.root={tmp_path / 'runs'}"])
    summary = train(cfg)
    metrics = json.loads((cfg.run_dir() / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["train/images"] == 18 and metrics["test/images"] == 18 and metrics["val/images"] == 18
    assert summary["epochs"] == 1 and 0 <= summary["final"]["test/top1"] <= 100
    final = cfg.run_dir() / "checkpoints" / "final.pt"
    deployed = torch.load(final, weights_only=True)
    assert deployed["class_names"] == CLASSES and deployed["input_size"] == [16, 16]

    # A folder (searched at any depth), a glob and a file, one of them unreadable: every other file is
    # predicted, the bad one is one line on stderr, and the exit status is 2.
    (root / "test" / "owl" / "broken.png").write_bytes(b"\x89PNG not really")
    capsys.readouterr()
    status = predict_module.main(["--checkpoint", str(final), str(root / "test" / "owl"),
                                  str(root / "test" / "c*" / "*.jpg"), str(root / "test" / "dog" / "b.png"),
                                  "--top", "2"])
    out, err = capsys.readouterr()
    assert status == 2
    assert err.strip() == f"error: {root}/test/owl/broken.png: not an image PIL can read " \
                          f"(cannot identify image file '{root}/test/owl/broken.png')"
    predicted = [line.split(": ")[0] for line in out.strip().splitlines()]
    owl = sorted(str(p) for p in (root / "test" / "owl").rglob("*") if p.is_file() and p.name != "broken.png")
    assert predicted == owl + [f"{root}/test/cat/a.jpg", f"{root}/test/dog/b.png"]
    assert all(line.split(": ")[1].split()[0] in CLASSES for line in out.strip().splitlines())

    (root / "test" / "owl" / "broken.png").unlink()
    assert predict_module.main(["--checkpoint", str(final), str(root / "test")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 18
    assert predict_module.main(["--checkpoint", str(final), str(tmp_path / "none" / "*.png")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}/none/*.png: no image files " \
                                              f"(.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp)"
