"""Timing a network in a deployment runtime (ONNX Runtime, OpenVINO) on the CPU, with the
protocol every hwprune figure uses (``profiler.clock``: warm-up, adaptive repetitions,
median and spread).

The network is exported with ``zoo.export`` (checked against PyTorch, so a timed export
is known to compute the model), loaded with ``zoo.runtimes`` (fixed threads, the
runtime's own graph optimisations on) and called on a fixed input.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
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

    ``add(tag, module)`` exports and loads; ``session(tag)`` is the loaded model. The
    directory goes with ``close()`` (or the ``with`` block)."""

    def __init__(self, runtime: str, input_size: "int | tuple[int, int]", in_channels: int,
                 threads: int = 1) -> None:
        if check_runtime(runtime) == "torch":
            raise TimingError("RuntimeNets is for the deployment runtimes; torch modules are "
                              "timed with profiler.timing.time_model")
        self.runtime, self.size, self.in_ch, self.threads = runtime, input_size, in_channels, threads
        self.dir = Path(tempfile.mkdtemp(prefix="hwprune-rt-"))
        self.sessions: dict[str, Session] = {}
        self.exports: dict[str, dict] = {}

    def add(self, tag: str, module: nn.Module) -> Session:
        fmt = "onnx" if self.runtime == "onnxruntime" else "openvino"
        name = f"net{len(self.sessions)}.{'onnx' if fmt == 'onnx' else 'xml'}"
        result = export_model(module, self.dir / name, self.size, self.in_ch, fmt)
        self.exports[tag] = result.as_dict()
        self.sessions[tag] = open_session(self.dir / name, self.runtime, self.threads)
        return self.sessions[tag]

    def session(self, tag: str) -> Session:
        return self.sessions[tag]

    def close(self) -> None:
        self.sessions.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RuntimeNets":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RUNTIMES", "RuntimeNets", "time_session"]
