"""Shared bits of the benchmark scripts: machine metadata and atomic JSON output."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from hwprune.profiler.device import describe_device
from hwprune.profiler.table import atomic_write_bytes


def machine(device: str = "cpu") -> dict:
    info = describe_device(device)
    info.update({"python": platform.python_version(), "threads": torch.get_num_threads(),
                 "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "argv": sys.argv})
    return info


def parser(doc: str) -> argparse.ArgumentParser:
    """A script's parser whose --help is its docstring: the first paragraph as the
    description, the rest (what it measures, usage lines) kept as written."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   epilog=doc.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def write_json(out_dir: str | Path, name: str, payload: dict) -> Path:
    path = Path(out_dir) / name
    atomic_write_bytes(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))
    return path


def interval(values: list[float]) -> dict:
    """Mean and 95% t-interval over seeds (n - 1 degrees of freedom)."""
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return {"mean": float(a.mean()) if len(a) else None, "low": None, "high": None,
                "n": len(a)}
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return {"mean": float(a.mean()), "low": float(a.mean() - half),
            "high": float(a.mean() + half), "n": len(a)}
