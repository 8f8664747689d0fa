"""Shared bits of the benchmark scripts: machine metadata and atomic JSON output."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
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


def head_commit(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()


@contextlib.contextmanager
def clean_clone(repo: Path, prefix: str = "hwprune-clean-"):
    """A fresh clone of ``repo``'s committed HEAD in a temporary directory (removed after),
    as CI and a new user get it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        yield clone


def timed(cmd: list[str], cwd: Path, timeout: float) -> tuple[int, float, str]:
    """(exit status, seconds, stdout + stderr) of ``cmd`` run as CI runs it (CI=true)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "CI": "true"})
    return proc.returncode, time.perf_counter() - t0, proc.stdout + proc.stderr


def write_json(out_dir: str | Path, name: str, payload: dict) -> Path:
    path = Path(out_dir) / name
    atomic_write_bytes(path, lambda f: f.write(json.dumps(payload, indent=2).encode()))
    return path


def median_range(values: list[float]) -> dict:
    """Median and range of repeated runs' figures (the headline form of a benchmark)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def budget_cells(rows: list[dict], criteria: list[str], failed: str = "failed") -> list[dict]:
    """Per budget (tightest last) and criterion: how many runs, the mean and 95% interval of
    the accuracy and of the measured latency ratio over those that finished, how many the
    fresh verdict (settled by its median when uncertain) counted as met, and under
    ``failed`` how many ended in an error (a budget out of reach)."""
    cells = []
    for budget in sorted({r["budget"] for r in rows}, reverse=True):
        for crit in criteria:
            rs = [r for r in rows if r["budget"] == budget and r["criterion"] == crit]
            if not rs:
                continue
            done = [r for r in rs if r.get("error") is None]
            cells.append({"budget": budget, "criterion": crit, "runs": len(rs),
                          failed: len(rs) - len(done),
                          "accuracy": interval([r["accuracy"] for r in done]),
                          "measured_ratio": interval([r["measured_ratio"] for r in done]),
                          "met": sum(r["settled"] == "met" for r in done)})
    return cells


def interval(values: list[float]) -> dict:
    """Mean and 95% t-interval over seeds (n - 1 degrees of freedom)."""
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return {"mean": float(a.mean()) if len(a) else None, "low": None, "high": None,
                "n": len(a)}
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return {"mean": float(a.mean()), "low": float(a.mean() - half),
            "high": float(a.mean() + half), "n": len(a)}
