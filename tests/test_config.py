"""Config errors are one line naming the file and key, and the entry point exits 2."""
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

BASE = """
data: {dataset: procedural, root: DATA}
model: {target: resnet8}
method: {name: scratch}
"""


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text.replace("DATA", str(tmp_path / "data")))
    return path


def test_valid_config_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.epochs=3", "optim.milestones=[1, 2]", "data.batch_size=32"])
    assert cfg.train.epochs == 3 and cfg.optim.milestones == [1, 2] and cfg.data.batch_size == 32
    assert cfg.run.name == "exp"


def test_list_items_are_addressed_by_position(tmp_path):
    text = BASE.replace("method: {name: scratch}", "sources: [{name: a, format: checkpoint, arch: resnet8, weights: x.pt}]")
    cfg = load_config(write(tmp_path, text), ["sources.0.weights=y.pt", "sources.0.cache=off"])
    assert cfg.sources[0].weights == "y.pt" and cfg.sources[0].cache == "off"
    with pytest.raises(ConfigError, match=r"sources.3 is not an item of a list of 1"):
        load_config(write(tmp_path, text), ["sources.3.weights=y.pt"])


def test_run_name_follows_configs_folder(tmp_path):
    folder = tmp_path / "configs" / "cifar10"
    folder.mkdir(parents=True)
    assert load_config(write(folder, BASE, "r20.yaml")).run.name == "cifar10/r20"


@pytest.mark.parametrize("text,overrides,message", [
    (BASE + "typo_key: 1\n", [], r"exp.yaml: typo_key: Extra inputs are not permitted"),
    (BASE, ["data.batch_size=abc"], r"exp.yaml: data.batch_size: .*valid integer.*'abc'"),
    (BASE, ["data.dataset=imagenet"], r"exp.yaml: data.dataset: unknown data set 'imagenet'; known: cifar10, "),
    (BASE, ["method.name=sskt"], r"sskt needs at least one entry in sources"),
    (BASE, ["optim.lr"], r"expected key=value"),
    ("data: [1, 2\n", [], r"exp.yaml: not valid YAML"),
])
def test_errors_name_file_and_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), overrides)


def run_train(*args, cwd):
    return subprocess.run([sys.executable, "-m", "engine.train", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_entry_point_exits_2_with_one_line(tmp_path):
    result = run_train("--config", str(write(tmp_path, BASE + "typo_key: 1\n")), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "typo_key" in result.stderr


def test_missing_weight_file_exits_2_naming_it(tmp_path):
    text = BASE.replace("method: {name: scratch}",
                        "sources: [{name: obj, format: checkpoint, arch: resnet8, weights: nowhere/obj.pt}]")
    result = run_train("--config", str(write(tmp_path, text)), "data.procedural={train_size: 8, test_size: 8}",
                       cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "nowhere/obj.pt" in result.stderr and result.stderr.strip().count("\n") == 0


def test_missing_data_root_exits_2_naming_it(tmp_path):
    folder = tmp_path / "nocifar"
    text = BASE.replace("dataset: procedural, root: DATA", f"dataset: cifar10, root: {folder}")
    result = run_train("--config", str(write(tmp_path, text)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(folder) in result.stderr and result.stderr.strip().count("\n") == 0


def test_every_shipped_config_validates():
    configs = sorted((ROOT / "configs").glob("*/*.yaml"))
    assert len(configs) > 40
    names = {load_config(path).method.name for path in configs}
    assert names == {"scratch", "sskt", "kd", "dml", "maxl"}
