"""Every shipped config resolves (its bases merged, defaults filled in) to the form recorded in
tests/resolved_configs.yaml, so that moving settings into bases changes no experiment.

After an intended change of a config or of a default, rewrite the record and review its diff:

    PYTHONPATH=. .venv/bin/python tests/test_config_snapshot.py --write
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from engine.config import dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "tests" / "resolved_configs.yaml"


def experiment_configs() -> list[Path]:
    """Every experiment under configs/ (bases, in folders named _*, are parts of experiments)."""
    return sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                  if not any(part.startswith("_") for part in p.relative_to(ROOT / "configs").parts))


def resolved(path: Path) -> dict:
    return yaml.safe_load(dump_config(load_config(path)))


def record() -> dict[str, dict]:
    return yaml.safe_load(RECORD.read_text())


def test_the_record_lists_every_config():
    assert sorted(record()) == [str(p.relative_to(ROOT)) for p in experiment_configs()]


@pytest.mark.parametrize("name", sorted(record()) if RECORD.exists() else [])  # (the test above fails without it)
def test_config_resolves_as_recorded(name):
    expected, actual = record()[name], resolved(ROOT / name)
    flat_expected, flat_actual = flatten(expected), flatten(actual)
    changed = sorted(k for k in flat_expected.keys() | flat_actual.keys() if flat_expected.get(k) != flat_actual.get(k))
    assert not changed, f"{name}: " + ", ".join(f"{k}: {flat_expected.get(k)!r} -> {flat_actual.get(k)!r}"
                                                for k in changed)


def flatten(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in flatten(child, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    RECORD.write_text(yaml.safe_dump({str(p.relative_to(ROOT)): resolved(p) for p in experiment_configs()},
                                     sort_keys=False, width=120, default_flow_style=None))
    print(f"{RECORD}: {len(experiment_configs())} configs")
