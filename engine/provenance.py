"""Where a number came from: code version, command, packages, device (summary.json, config.yaml, bench).

    provenance(device)  -> {"git": {"commit", "dirty"}, "command", "python", "packages", "device", "started"}
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# Distribution names; DALI's carries its CUDA flavour (nvidia-dali-cuda120, ...), so it is matched by prefix.
PACKAGES = ("torch", "torchvision", "accelerate", "h5py", "av", "numpy", "pydantic")
DALI_PREFIX = "nvidia-dali"


def provenance(device: torch.device | str | None = None) -> dict:
    return {"git": git_state(), "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
            "python": platform.python_version(), "packages": package_versions(), "device": describe_device(device),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def git_state() -> dict:
    """The checked-out commit and whether tracked or untracked (not ignored) files differ from it."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}  # not a git checkout (an unpacked archive), or no git


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    dali = [d for d in importlib.metadata.distributions() if (d.metadata["Name"] or "").lower().startswith(DALI_PREFIX)]
    versions[DALI_PREFIX] = f"{dali[0].metadata['Name']} {dali[0].version}" if dali else None
    return versions


def describe_device(device: torch.device | str | None) -> str:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def dated_path(path: Path) -> Path:
    """`bench/results.json` -> `bench/results-20261125-1910.json`: a new file per measurement, so a run
    never overwrites the tracked one unless asked (`--out bench/results.json`)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return path.with_name(f"{path.stem}-{stamp}{path.suffix}")


def as_yaml_comment(record: dict) -> str:
    """Provenance as `# key: value` lines: config.yaml stays a config that load_config reads."""
    git = record["git"]
    lines = [f"git commit: {git['commit']}{' (dirty tree)' if git['dirty'] else ''}",
             f"command: {record['command']}", f"device: {record['device']}", f"python: {record['python']}",
             "packages: " + ", ".join(f"{k} {v}" for k, v in record["packages"].items() if v),
             f"started: {record['started']}"]
    lines += [f"source {name}: {origin}" for name, origin in record.get("sources", {}).items()]
    return "".join(f"# {' '.join(line.splitlines())}\n" for line in lines)
