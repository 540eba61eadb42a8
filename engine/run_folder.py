"""What every run leaves behind, under runs/<config name>/seed<k>/:
config.yaml (resolved), inputs.json (each source's weight file and its sha256: a run
whose sources' weights changed since is stale, though its config is the same),
metrics.jsonl (one line per epoch), tensorboard/, checkpoints/, summary.json
(written last, atomically: present = finished).
"""
from __future__ import annotations

import json
from pathlib import Path

from foundation.files import file_sha256, write_atomic


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.metrics_file = self.path / "metrics.jsonl"
        self.summary_file = self.path / "summary.json"

    def create(self, config_yaml: str) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / "config.yaml", config_yaml)

    def record_inputs(self, sources) -> None:
        inputs = {"sources": {s.name: {"weights": str(s.weights_path), "sha256": s.weights_sha256} for s in sources}}
        write_atomic(self.path / "inputs.json", json.dumps(inputs, indent=2) + "\n")

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, last_epoch: int) -> None:
        """On resume, forget epochs logged after the checkpoint we resume from."""
        kept = [r for r in self.metrics() if r["epoch"] <= last_epoch]
        write_atomic(self.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))

    def write_summary(self, summary: dict) -> None:
        write_atomic(self.summary_file, json.dumps(summary, indent=2) + "\n")


def changed_inputs(run_dir: Path) -> list[str]:
    """Each source whose weight file holds other bytes now than when the run in run_dir read it. A file
    that is gone is not compared (training reports it); a run from before inputs.json cannot be."""
    inputs_file = Path(run_dir) / "inputs.json"
    if not inputs_file.exists():
        return []
    changed = []
    for name, used in json.loads(inputs_file.read_text())["sources"].items():
        weights = Path(used["weights"])
        if weights.is_file() and (now := file_sha256(weights)) != used["sha256"]:
            changed.append(f"source {name}: {weights} had sha256 {used['sha256'][:12]} there, {now[:12]} now")
    return changed
