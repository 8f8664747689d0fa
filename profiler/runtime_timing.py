"""Timing a network in a deployment runtime (ONNX Runtime, OpenVINO) on the CPU, with the
protocol every hwprune figure uses (``profiler.clock``: warm-up, adaptive repetitions,
median and spread).

The network is exported with ``zoo.export`` (checked against PyTorch, so a timed export
is known to compute the model), loaded with ``zoo.runtimes`` (fixed threads, the
runtime's own graph optimisations on) and called on a fixed input.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwprune.profiler.clock import Stats, TimingConfig, TimingError, time_callable
from hwprune.zoo.export import export_model
from hwprune.zoo.runtimes import RUNTIMES, Session, check_runtime, open_session


def time_session(session: Session, x: np.ndarray, cfg: TimingConfig) -> Stats:
    """End-to-end latency of a loaded model, like ``profiler.timing.time_model``."""
    if cfg.device != "cpu":
        raise TimingError("the deployment runtimes are timed on the CPU here")
    return time_callable(lambda: session.run(x), cfg, session.info.runtime)


class RuntimeNets:
    """Torch modules exported once into a temporary directory and loaded in one runtime.

    ``add(tag, module)`` exports and loads; ``session(tag)`` is the loaded model. A module
    equal to one added before (same structure, same weights: ``module_digest``) reuses its
    export and session: a pruning job measures its teacher, and each student while its
    verdict is uncertain, several times, and one export costs about a second for even a
    tiny network. The directory goes with ``close()`` (or the ``with`` block)."""

    def __init__(self, runtime: str, input_size: "int | tuple[int, int]", in_channels: int,
                 threads: int = 1) -> None:
        if check_runtime(runtime) == "torch":
            raise TimingError("RuntimeNets is for the deployment runtimes; torch modules are "
                              "timed with profiler.timing.time_model")
        self.runtime, self.size, self.in_ch, self.threads = runtime, input_size, in_channels, threads
        self.dir = Path(tempfile.mkdtemp(prefix="hwprune-rt-"))
        self.sessions: dict[str, Session] = {}
        self.exports: dict[str, dict] = {}
        self._done: dict[str, tuple[Session, dict]] = {}  # by module_digest
        self.exported = 0  # exports made (the rest were reused)

    def matches(self, runtime: str, input_size: "int | tuple[int, int]", in_channels: int,
                threads: int) -> bool:
        return (self.runtime, self.size, self.in_ch, self.threads) == \
            (runtime, input_size, in_channels, threads)

    def add(self, tag: str, module: nn.Module) -> Session:
        key = module_digest(module)
        if key not in self._done:
            fmt = "onnx" if self.runtime == "onnxruntime" else "openvino"
            name = f"net{self.exported}.{'onnx' if fmt == 'onnx' else 'xml'}"
            result = export_model(module, self.dir / name, self.size, self.in_ch, fmt)
            self._done[key] = (open_session(self.dir / name, self.runtime, self.threads),
                               result.as_dict())
            self.exported += 1
        self.sessions[tag], self.exports[tag] = self._done[key]
        return self.sessions[tag]

    def session(self, tag: str) -> Session:
        return self.sessions[tag]

    def close(self) -> None:
        self.sessions.clear()
        self._done.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RuntimeNets":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def module_digest(module: nn.Module) -> str:
    """What an export of ``module`` depends on: its printed structure (layers, channel
    counts, their settings) and every tensor of its state, by value."""
    h = hashlib.sha256(repr(module).encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


__all__ = ["RUNTIMES", "RuntimeNets", "module_digest", "time_session"]
