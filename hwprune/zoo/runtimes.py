"""Deployment runtimes: ONNX Runtime and OpenVINO, run the way hwprune times and checks them.

A pruned model that is faster in PyTorch need not be faster in the runtime a user ships
with: runtimes fuse Conv+BatchNorm+activation, pick their own kernels and layouts. So
hwprune runs a model in the runtime itself, on the CPU, with a fixed thread count and the
runtime's own graph optimisations on (what a deployment gets by default), and records
those settings (``RuntimeInfo``) beside every figure it produces.

The runtimes are optional (``pip install 'hwprune[runtimes]'``); ``require`` names the
extra when one is missing.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwprune.zoo.models import ModelError, _first_line

RUNTIMES = ("torch", "onnxruntime", "openvino")
# The module each runtime is imported as, and the distribution that provides it.
_MODULES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino"),
            "onnx": ("onnx", "onnx"), "onnxscript": ("onnxscript", "onnxscript")}
EXTRA = "runtimes"


class RuntimeMissing(ModelError):
    """A runtime (or the ONNX exporter) that this install lacks."""


def require(name: str) -> Any:
    """The runtime's module, or a one-line error naming what to install."""
    module, dist = _MODULES[name]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise RuntimeMissing(f"{name} is not installed: pip install 'hwprune[{EXTRA}]' "
                             f"(or pip install {dist}); {e}") from None


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime '{runtime}' (choose {', '.join(RUNTIMES)})")
    return runtime


@dataclass(frozen=True)
class RuntimeInfo:
    """What a figure measured in a runtime depends on."""

    runtime: str
    version: str
    provider: str        # ONNX Runtime execution provider / OpenVINO device plugin
    threads: int
    optimization: str    # graph optimisation level / performance hint

    def as_dict(self) -> dict:
        return asdict(self)


class Session:
    """One loaded model in a runtime: ``run(x, ...)`` (one array per model input, in order)
    returns the first output as a numpy array."""

    info: RuntimeInfo

    def run(self, *xs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        return self.run(*xs)


class OrtSession(Session):
    def __init__(self, path: Path, threads: int, profile: str | None = None) -> None:
        ort = require("onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # its warnings about unused initialisers are not the user's
        if profile:  # per-node times, written under this file prefix (``node_times``)
            so.enable_profiling, so.profile_file_prefix = True, profile
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception classes for unsupported ops
            raise ModelError(f"{path}: ONNX Runtime cannot load it: {_first_line(e)}") from None
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.info = RuntimeInfo("onnxruntime", ort.__version__, "CPUExecutionProvider", threads,
                                "ORT_ENABLE_ALL")

    def run(self, *xs: np.ndarray) -> np.ndarray:
        return self.sess.run(None, dict(zip(self.inputs, xs)))[0]

    def node_times(self) -> dict[str, list[float]]:
        """Microseconds of each node's kernel in every run so far, by node name (the runtime's
        own names after its graph optimisations); ends the session's profiling."""
        import json

        times: dict[str, list[float]] = {}
        path = self.sess.end_profiling()
        try:
            for e in json.loads(Path(path).read_text()):
                if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                    times.setdefault(e["name"][: -len("_kernel_time")], []).append(e["dur"])
        finally:
            Path(path).unlink(missing_ok=True)
        return times


# The resolution of OpenVINO's per-node profile (PERF_COUNT): whole microseconds.
OV_RESOLUTION_US = 1.0


class OpenVinoSession(Session):
    def __init__(self, path: Path, threads: int, profile: str | None = None) -> None:
        ov = require("openvino")
        core = ov.Core()
        # f32 inference precision: on CPUs with bf16 units OpenVINO would otherwise run an
        # fp32 model in bf16, and its outputs would not be the model's.
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if profile:
            config["PERF_COUNT"] = True
        try:
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        except Exception as e:
            raise ModelError(f"{path}: OpenVINO cannot compile it: {_first_line(e)}") from None
        self.request = self.compiled.create_infer_request()
        self.info = RuntimeInfo("openvino", ov.get_version(), "CPU", threads, "LATENCY")

    def run(self, *xs: np.ndarray) -> np.ndarray:
        return self.request.infer(dict(enumerate(xs)))[0]

    def last_node_times(self) -> dict[str, float]:
        """Microseconds of each node in the last run (PERF_COUNT sessions), by name; layout
        conversions (Reorder) are named ``Reorder:<name>``.

        A node with a kernel that the profile marks NOT_RUN, or times at 0, took under the
        profile's 1-us resolution: it counts as half of it (a 32-channel 4x4 ReduceMean was
        NOT_RUN in 2736 of 3000 runs and EXECUTED at 1-8 us in the others, 2026-11-29).
        Keeping only executed nodes made such an operator's time the median of its slowest
        runs, and a run with all of them NOT_RUN stopped a scan; counting them as 0 gave a
        median of 0, which no table may hold. Nodes fused into another (kernel ``undef``),
        inputs and outputs are left out."""
        return {(f"Reorder:{p.node_name}" if p.node_type == "Reorder" else p.node_name):
                p.real_time.total_seconds() * 1e6 or OV_RESOLUTION_US / 2
                for p in self.request.get_profiling_info()
                if str(p.status).endswith("EXECUTED") or (
                    p.exec_type != "undef" and p.node_type not in ("Parameter", "Result"))}


def open_session(path: str | os.PathLike, runtime: str, threads: int = 1,
                 profile: str | None = None) -> Session:
    """Load an exported model (``.onnx`` for either runtime, ``.xml`` for OpenVINO).
    ``profile``: time every node (ONNX Runtime writes its profile under that prefix)."""
    check_runtime(runtime)
    if runtime == "torch":
        raise ModelError("open_session is for the deployment runtimes, not torch")
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    cls = OrtSession if runtime == "onnxruntime" else OpenVinoSession
    return cls(path, threads, profile)


__all__ = ["RUNTIMES", "EXTRA", "RuntimeMissing", "RuntimeInfo", "Session", "require",
           "check_runtime", "open_session"]
