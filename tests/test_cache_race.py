"""Two jobs that share a cache folder (seeds of one table submitted together) build a cache once."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from engine.config import ImageDataConfig, SourceConfig
from engine.source_outputs.image_cache import cache_spec, check_cache_file
from models.sources import load_source
from pipelines.datasets import build_split
from pipelines.views import ViewSet
from tests.conftest import ROOT

# One job: wait until both are ready, then open (and build where needed) the cache with a slow source.
JOB = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from engine.config import ImageDataConfig, SourceCacheConfig, SourceConfig
    from engine.source_outputs.image_cache import open_cached_source
    from models.sources import load_source
    from pipelines.datasets import build_split
    from pipelines.views import ViewSet

    work, weights, me = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

    class Slow:  # the real source, slowed down so that the two builds would overlap
        calls = 0
        def __init__(self, source): self.source = source
        def __getattr__(self, name): return getattr(self.source, name)
        def __call__(self, images):
            Slow.calls += 1
            time.sleep(0.2)
            return self.source(images)

    images = build_split(ImageDataConfig(dataset="procedural", root=work / "data",
                                    procedural={"train_size": 40, "test_size": 8}), "train")
    source = Slow(load_source(SourceConfig(name="obj", format="checkpoint", arch="resnet8", weights=weights,
                                           resize={"scale": 1.5})))
    (work / f"ready-{me}").touch()
    while not all((work / f"ready-{j}").exists() for j in "ab"):
        time.sleep(0.01)
    open_cached_source(source, images, ViewSet(pad=2, count=6), SourceCacheConfig(root=work / "cache"), "auto",
                       block_samples=8, progress=False)
    print(f"source calls: {Slow.calls}")
""")


def test_two_processes_racing_to_build_one_cache_end_with_one_valid_file(tmp_path, source_checkpoint):
    build_split(ImageDataConfig(dataset="procedural", root=tmp_path / "data",
                           procedural={"train_size": 40, "test_size": 8}), "train")  # data written before the race
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    jobs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(source_checkpoint), me], env=env,
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in "ab"]
    outputs = [job.communicate(timeout=300) for job in jobs]
    for job, (out, err) in zip(jobs, outputs):
        assert job.returncode == 0, err[-2000:]

    calls = sorted(int(out.split("source calls: ")[1]) for out, _ in outputs)
    assert calls[0] == 0 and calls[1] > 0  # one built it, the other waited and only read it
    assert any("another process is building it" in out for out, _ in outputs)
    images = build_split(ImageDataConfig(dataset="procedural", root=tmp_path / "data",
                                    procedural={"train_size": 40, "test_size": 8}), "train")
    source = load_source(SourceConfig(name="obj", format="checkpoint", arch="resnet8", weights=str(source_checkpoint),
                                      resize={"scale": 1.5}))
    spec = cache_spec(source, images, ViewSet(pad=2, count=6), tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").glob("*.h5")] == [spec.path.name]  # no partial file left over
    assert check_cache_file(spec) is None
