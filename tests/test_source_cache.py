"""Source-output cache: exactly the view the target sees, reused without the source, never stale, resumable."""
from __future__ import annotations

import dataclasses
import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from engine.checkpoint import save_deployed
from engine.config import ImageDataConfig, SourceCacheConfig, SourceConfig, load_config
from engine.source_outputs.image_cache import (CacheError, CachedSource, cache_spec, check_cache_file, human_bytes,
                                 open_cached_source)
from engine.trainer import train
from models.registry import build_target
from models.sources import load_source
from pipelines.datasets import build_split
from pipelines.views import ViewSet, apply_views
from tests.conftest import ROOT
from tools import cache_sources

VIEWS = ViewSet(pad=2, count=6)
BLOCK = 8  # samples per build block: 40 samples -> 5 blocks of 48 images -> 2 source calls each (batch 32)
CALLS_PER_BUILD = 10
DATA = {"train_size": 40, "test_size": 8}


class Interrupted(Exception):
    pass


class Counting:
    """A source that counts its forward calls and can fail on one, as a kill would interrupt a build."""

    def __init__(self, source, fail_at: int | None = None):
        self.source, self.fail_at, self.calls = source, fail_at, 0

    def __getattr__(self, name):  # name, num_classes, fingerprint: those of the wrapped source
        return getattr(self.source, name)

    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise Interrupted(f"interrupted at call {self.calls}")
        return self.source(images01)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("source_cache")


@pytest.fixture(scope="module")
def images(workdir):
    return build_split(ImageDataConfig(dataset="procedural", root=workdir / "data", procedural=DATA), "train")


def write_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_deployed(build_target("resnet8", 10).state_dict(), "resnet8", 10, path)
    return path


def source_config(weights: Path, cache: str = "auto") -> SourceConfig:
    return SourceConfig(name="obj", format="checkpoint", arch="resnet8", weights=str(weights),
                        resize={"scale": 1.5}, cache=cache)


@pytest.fixture(scope="module")
def weights(workdir) -> Path:
    return write_weights(workdir / "obj.pt", seed=1)


@pytest.fixture(scope="module")
def source(weights):
    return load_source(source_config(weights))


def cache_cfg(root: Path, memory_gb: float = 1.0) -> SourceCacheConfig:
    return SourceCacheConfig(root=root, batch_size=32, memory_gb=memory_gb)


def open_counted(source, images, root: Path, mode: str = "auto", views: ViewSet = VIEWS, fail_at=None,
                 memory_gb: float = 1.0) -> tuple[CachedSource, Counting]:
    counted = Counting(source, fail_at)
    cached = open_cached_source(counted, images, views, cache_cfg(root, memory_gb), mode, block_samples=BLOCK,
                                progress=False)
    return cached, counted


@pytest.fixture(scope="module")
def reference_cache(workdir, images, source) -> tuple[CachedSource, float]:
    """The uninterrupted build every other build is compared with (and its build rate)."""
    started = time.perf_counter()
    cached, counted = open_counted(source, images, workdir / "reference")
    rate = len(images) * VIEWS.count / (time.perf_counter() - started)
    assert counted.calls == CALLS_PER_BUILD
    return cached, rate


def live(source, images, index: list[int], views: list[int], view_set: ViewSet = VIEWS) -> torch.Tensor:
    pixels = torch.from_numpy(np.stack([images.load_image(i) for i in index])).permute(0, 3, 1, 2)
    return source(apply_views(pixels, torch.tensor(views), view_set).float() / 255)


def lookup(cached: CachedSource, index: list[int], views: list[int]) -> torch.Tensor:
    return cached({"index": torch.tensor(index), "view": torch.tensor(views)})


# ---------------------------------------------------------------- correctness


def test_each_view_gets_its_own_live_output(reference_cache, source, images):
    cached, rate = reference_cache
    # Sample 3 in three views within one batch: a cache keyed by sample alone would repeat one of them.
    index, views = [3, 3, 3, 0, 39, 17, 17], [0, 1, 5, 2, 4, 3, 3]
    got = lookup(cached, index, views)
    assert got.dtype == torch.float32 and got.shape == (7, 10)
    torch.testing.assert_close(got, live(source, images, index, views), rtol=1e-3, atol=1e-3)  # float16 storage
    assert not torch.allclose(got[0], got[1]) and not torch.allclose(got[1], got[2])
    print(f"built {len(images)}x{VIEWS.count} outputs at {rate:.0f} images/s; "
          f"file {human_bytes(cached.path.stat().st_size)} for {human_bytes(cached.nbytes)} of outputs")


def test_second_open_reuses_the_file_without_the_source(reference_cache, source, images, workdir):
    cached, _ = reference_cache
    before = cached.path.stat().st_mtime_ns
    again, counted = open_counted(source, images, workdir / "reference", mode="required")
    assert again.path == cached.path and counted.calls == 0
    assert cached.path.stat().st_mtime_ns == before
    torch.testing.assert_close(lookup(again, [5, 6], [1, 2]), lookup(cached, [5, 6], [1, 2]), rtol=0, atol=0)


def test_memory_and_out_of_core_reads_agree(reference_cache, workdir, images, source):
    cached, _ = reference_cache
    in_memory = CachedSource(cached.path, cached.shape, torch.device("cpu"), memory_bytes=1 << 30)
    from_file = CachedSource(cached.path, cached.shape, torch.device("cpu"), memory_bytes=0)
    assert in_memory.in_memory and not from_file.in_memory
    rng = np.random.default_rng(0)
    for _ in range(3):  # unsorted, with repeated samples and repeated (sample, view) pairs
        index, views = rng.integers(0, 40, 32).tolist(), rng.integers(0, VIEWS.count, 32).tolist()
        a, b = lookup(in_memory, index, views), lookup(from_file, index, views)
        assert torch.equal(a, b)
    assert from_file._file is not None and in_memory._file is None  # opened on the first lookup only
    # The same through open_cached_source with memory_gb=0: no rebuild, out-of-core reads.
    opened, counted = open_counted(source, images, workdir / "reference", memory_gb=0)
    assert not opened.in_memory and counted.calls == 0
    assert torch.equal(lookup(opened, [9, 9], [0, 5]), lookup(in_memory, [9, 9], [0, 5]))
    from_file.close()


# ---------------------------------------------------------------- identity


def test_changed_weights_or_views_never_reuse_a_cache(reference_cache, workdir, images, source):
    cached, _ = reference_cache
    root = workdir / "identity"
    shutil.copytree(workdir / "reference", root)
    other = load_source(source_config(write_weights(workdir / "other.pt", seed=2)))
    assert other.fingerprint() != source.fingerprint()
    rebuilt, counted = open_counted(other, images, root)
    assert rebuilt.path != root / cached.path.name and counted.calls == CALLS_PER_BUILD
    torch.testing.assert_close(lookup(rebuilt, [1, 2], [0, 3]), live(other, images, [1, 2], [0, 3]),
                               rtol=1e-3, atol=1e-3)

    four = ViewSet(pad=2, count=4)
    assert cache_spec(source, images, four, root).path != cache_spec(source, images, VIEWS, root).path
    with pytest.raises(CacheError) as err:  # never built for 4 views: required refuses to guess
        open_counted(source, images, root, mode="required", views=four)
    msg = str(err.value)
    assert "\n" not in msg and str(cache_spec(source, images, four, root).path) in msg
    assert "python -m tools.cache_sources --config" in msg
    rebuilt, counted = open_counted(source, images, root, views=four)
    assert counted.calls > 0 and rebuilt.shape == (40, 4, 10)
    # Fewer samples (data.limit) are other images, hence another identity as well.
    assert cache_spec(source, images.subset(39), VIEWS, root).identity != cache_spec(source, images, VIEWS, root).identity
    assert filecmp.cmp(root / cached.path.name, cached.path, shallow=False)  # the original file is untouched


# ---------------------------------------------------------------- interruption and damage


def test_interrupted_build_resumes_to_identical_bytes(reference_cache, workdir, images, source):
    cached, _ = reference_cache
    root = workdir / "interrupted"
    spec = cache_spec(source, images, VIEWS, root)
    with pytest.raises(Interrupted):
        open_counted(source, images, root, fail_at=5)  # blocks 0-1 written, block 2 dies
    assert not spec.path.exists() and spec.partial_path.exists()  # never the final name while partial
    assert check_cache_file(spec) == "does not exist"
    with pytest.raises(CacheError):  # a partial file is not a cache
        open_counted(source, images, root, mode="required")
    resumed, counted = open_counted(source, images, root)
    assert counted.calls == CALLS_PER_BUILD - 4  # only blocks 2-4 computed again
    assert resumed.path == spec.path and not spec.partial_path.exists()
    assert filecmp.cmp(spec.path, cached.path, shallow=False)


def test_truncated_file_is_detected_and_rebuilt(reference_cache, workdir, images, source, capsys):
    cached, _ = reference_cache
    root = workdir / "truncated"
    root.mkdir()
    damaged = root / cached.path.name
    shutil.copyfile(cached.path, damaged)
    os.truncate(damaged, damaged.stat().st_size // 2)
    capsys.readouterr()
    with pytest.raises(CacheError, match="cannot be read"):
        open_counted(source, images, root, mode="required")
    assert damaged.exists()  # required only reports
    rebuilt, counted = open_counted(source, images, root)
    lines = [line for line in capsys.readouterr().out.splitlines() if "deleting" in line]
    assert len(lines) == 1 and str(damaged) in lines[0] and "cannot be read" in lines[0], lines
    assert counted.calls == CALLS_PER_BUILD and filecmp.cmp(damaged, cached.path, shallow=False)


def test_other_damage_is_named(reference_cache, workdir, images, source):
    cached, _ = reference_cache
    spec = cache_spec(source, images, VIEWS, workdir / "damaged")
    spec.path.parent.mkdir()
    spec.path.write_bytes(b"not an HDF5 file")
    assert check_cache_file(spec).startswith("cannot be read")
    import h5py
    shutil.copyfile(cached.path, spec.path)
    with h5py.File(spec.path, "r+") as f:
        f.attrs.modify("complete", np.uint8(0))
    assert check_cache_file(spec) == "is not marked complete"
    with h5py.File(spec.path, "r+") as f:
        f.attrs["identity"] = "0" * 64
    assert "other settings" in check_cache_file(spec)


# ---------------------------------------------------------------- training and processes


@pytest.fixture
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_training_with_the_cache_matches_live_sources(tiny_config, tmp_path, fresh_accelerate_state):
    common = ["train.epochs=1", "data.views=8", f"source_cache.root={tmp_path / 'cache'}"]
    runs = {}
    for mode in ("off", "auto"):
        cfg = load_config(tiny_config, [*common, f"sources.0.cache={mode}", f"run.name=cache-{mode}"])
        train(cfg)
        AcceleratorState._reset_state(reset_partial_state=True)
        runs[mode] = [json.loads(line) for line in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    assert len(list((tmp_path / "cache").glob("object-train-*.h5"))) == 1
    live_run, cached_run = runs["off"][0], runs["auto"][0]
    print("live:", live_run["train/loss"], "cached:", cached_run["train/loss"])
    assert cached_run["train/loss"] == pytest.approx(live_run["train/loss"], rel=1e-3)
    assert cached_run["train/aux/object"] == pytest.approx(live_run["train/aux/object"], rel=1e-3)


TOOL_CONFIG = """
data: {{dataset: procedural, root: {data}, procedural: {{train_size: 40, test_size: 8}}, pad: 2, views: 6}}
model: {{target: resnet8}}
sources:
  - {{name: obj, format: checkpoint, arch: resnet8, weights: {weights}, resize: {{scale: 1.5}}, cache: required}}
source_cache: {{root: {root}, batch_size: 32}}
train: {{progress: false}}
"""

# The tool, with blocks as small as the tests' (5 blocks: the last round leaves rank 1 without one).
TOOL = """import sys
import engine.source_outputs.image_cache
engine.source_outputs.image_cache.BLOCK_IMAGES = 48
from tools.cache_sources import main
sys.exit(main())
"""


def run_tool(script: Path, args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # same numerics in every process
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else []
    return subprocess.run([sys.executable, *launch, str(script), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_tool_builds_the_same_file_with_one_or_two_processes(workdir, weights, images, reference_cache, capsys,
                                                             fresh_accelerate_state):
    config, script = workdir / "tool.yaml", workdir / "small_block_tool.py"
    config.write_text(TOOL_CONFIG.format(data=workdir / "data", weights=weights, root=workdir / "tool-one"))
    script.write_text(TOOL)
    assert cache_sources.main(["--config", str(config), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not exist" in err and "python -m tools.cache_sources" in err, err

    one = run_tool(script, ["--config", str(config)])
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_tool(script, ["--config", str(config), f"source_cache.root={workdir / 'tool-two'}"], processes=2)
    assert two.returncode == 0, two.stderr[-2000:]
    [a], [b] = (workdir / "tool-one").glob("*.h5"), (workdir / "tool-two").glob("*.h5")
    assert a.name == b.name == reference_cache[0].path.name
    assert filecmp.cmp(a, b, shallow=False)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert cache_sources.main(["--config", str(config), "--check"]) == 0


def test_an_empty_split_is_named_not_divided_by(workdir, images, source):
    empty = dataclasses.replace(images, labels=images.labels[:0], images=images.images[:0])
    with pytest.raises(ValueError, match=r"source 'obj': nothing to cache, the procedural train split is empty"):
        open_counted(source, empty, workdir / "empty")
    assert not (workdir / "empty").exists() or not any((workdir / "empty").iterdir())
