"""How fast the machine is running right now: one reference key re-timed through a scan.

A shared VM's speed moves while a table is measured: on the 2-core dev VM the demo
network measured 3.09 ms before a 28 s scan and 3.45 ms after it (2026-11-29, two other
jobs running), so keys timed late in the scan were stored about 11% slower than keys
timed early, and every variant's operator sum carried a share of that. The scan is
shuffled, so the drift does not bias whole layers, but it does make sums noisy.

``DriftReference`` re-times one fixed key of the model (a short, fixed protocol) every
``every_s`` seconds of the scan, and each row stores the reading in force when it was
measured (``ref_ms``). Rows keep what was measured; ``luts`` scales each row by the
table's fastest reading over its own, so all rows speak for one machine speed. The
calibration and the validation time the same key between the networks they measure, so
their measurements can be put on that same speed.

The reading in force is the median of the last ``SMOOTH`` raw readings, not the latest
one. A raw reading lasts about 4 ms (15 calls of a 0.25 ms conv); a key's measurement or
a network's lasts 50 ms to 3 s, and its median already rides out a short burst that can
take a whole reading with it. On the dev VM (2026-11-29, a quiet moment) one of ten raw
readings of a resnet18 scan came out 37% slow and scaled the rows measured after it down
by 27%; in the validation that followed, one variant's reading came out 19% slow and
moved its corrected latency by as much, so "put on the table's speed" agreed worse (R²
0.967) than the plain measurement (0.991). The machine's speed itself moves over tens of
seconds to minutes, which a median of the last five readings (8-10 s) still follows.

The key is compute-bound: its weights and activations fit a core's cache, so a reading
does not depend on what the work before it left in the caches. mobilenet_v2's first
gauge, a 1x1 conv with 1.6 MB of weights, read 6.6% apart over ten quiet readings on the
dev VM where a 0.35 MB conv of the same model read 2.5% apart (2026-11-29).

A table timed in a deployment runtime (``profiler.runtime_ops``) reads its gauge in that
runtime: the key's ONNX graph loaded once and each reading the wall time of its runs, so
the runtime's own threads and kernels are what is gauged. In an ONNX Runtime mobilenet_v2
scan its readings stayed within 0.5% of each other over 40 keys (2026-11-29).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace

import numpy as np

from hwprune.profiler.keyspace import CONV, OpKey, Trace, conv_out_hw, is_conv, macs
from hwprune.profiler.timing import TimingConfig, measure_key

# One reading: 3 warm-up calls and 15 timed, the median kept. Fixed, not adaptive: a
# reading must cost the same at every moment, or slow moments would be read longer.
REF_WARMUP, REF_REPS = 3, 15
# Raw readings the reading in force is the median of (see above); the first is the median
# of this many taken back to back, so the rows measured first are not left to one reading.
SMOOTH = 5
FIRST_READINGS = 3
# The reference should be timed well by 15 calls and cost little read every 2 s: the
# largest of the model's convs up to 30 million multiply-adds (about 0.2-1 ms on one CPU
# thread). Chosen from the model alone, so shards and resumed runs agree on it.
REF_MAX_MACS = 30_000_000
# ... among the convs whose weights, input and output (per sample) hold at most this many
# elements: 512 KiB in fp32, half a core's L2 on the dev VM (module docstring).
REF_MAX_ELEMENTS = 128 * 1024


def reference_config(tc: TimingConfig) -> TimingConfig:
    return TimingConfig(**{**tc.__dict__, "warmup": REF_WARMUP, "min_reps": REF_REPS,
                           "max_reps": REF_REPS, "rel_ci": 0.0, "max_seconds": 5.0}).validate()


def working_set(key: OpKey) -> int:
    """Elements a conv touches per sample: weights, input and output."""
    h, w = conv_out_hw(replace(key, op=CONV))
    return (key.c_out * (key.c_in // key.groups) * key.kernel_h * key.kernel_w
            + key.c_in * key.in_h * key.in_w + key.c_out * h * w)


def choose_reference(trace: Trace) -> OpKey | None:
    """The largest conv of the model within ``REF_MAX_MACS`` whose working set is within
    ``REF_MAX_ELEMENTS`` (else the largest within the MACs, else the smallest conv); None
    for a model without convs. A runtime's trace gives one of its fused chains."""
    convs = sorted({r.key for r in trace.layers if is_conv(r.key.op)},
                   key=lambda k: (macs(k), k.digest()))
    if not convs:
        return None
    within = [k for k in convs if macs(k) <= REF_MAX_MACS]
    small = [k for k in within if working_set(k) <= REF_MAX_ELEMENTS]
    return (small or within or convs[:1])[-1]


@dataclass
class DriftReference:
    """Readings of one key through a run; ``current()`` takes a new one when one is due.

    ``read()`` and ``current()`` return the reading in force: the median of the last
    ``smooth`` raw readings (module docstring). With a deployment ``runtime`` the key is
    read in it, from a session opened at the first reading: ``close()`` it (or use the
    reference as a context manager)."""

    key: OpKey
    cfg: TimingConfig
    every_s: float = 2.0
    smooth: int = SMOOTH
    runtime: str = "torch"
    readings: list[tuple[float, float]] = field(default_factory=list)  # (time, raw median ms)
    in_force: list[float] = field(default_factory=list)  # the reading in force after each
    _session: tuple | None = field(default=None, repr=False)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def _measure(self) -> float:
        if self.runtime == "torch":
            return measure_key(self.key, self.cfg).median_ms
        if self._session is None:
            from hwprune.profiler.runtime_ops import key_session  # the runtimes load only when asked

            self._session = self._stack.enter_context(
                key_session(self.key, self.runtime, self.cfg.threads or 1, self.cfg.batch))
        session, xs = self._session
        for _ in range(self.cfg.warmup):
            session.run(*xs)
        times = []
        for _ in range(self.cfg.max_reps):
            t0 = time.perf_counter()
            session.run(*xs)
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1e3

    def close(self) -> None:
        self._session = None
        self._stack.close()

    def __enter__(self) -> "DriftReference":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _take(self) -> None:
        self.readings.append((time.perf_counter(), self._measure()))
        self.in_force.append(float(np.median([r[1] for r in self.readings[-self.smooth:]])))

    def read(self) -> float:
        """A new raw reading now; the reading in force after it."""
        for _ in range(FIRST_READINGS if not self.readings else 1):
            self._take()
        return self.in_force[-1]

    def current(self) -> float:
        if not self.readings or time.perf_counter() - self.readings[-1][0] >= self.every_s:
            return self.read()
        return self.in_force[-1]

    def summary(self) -> dict:
        raw = np.array([r[1] for r in self.readings]) if self.readings else np.array([np.nan])
        ms = np.array(self.in_force) if self.in_force else np.array([np.nan])
        return {"key": self.key.as_dict(), "runtime": self.runtime, "every_s": self.every_s,
                "readings": len(self.readings),
                "warmup": self.cfg.warmup, "reps": self.cfg.max_reps, "stat": "median_ms",
                "smooth": self.smooth,
                "median_ms": float(np.median(ms)), "min_ms": float(ms.min()),
                "max_ms": float(ms.max()), "range": float(ms.max() / ms.min()),
                "raw_min_ms": float(raw.min()), "raw_max_ms": float(raw.max())}


__all__ = ["DriftReference", "choose_reference", "reference_config", "working_set",
           "REF_MAX_MACS", "REF_MAX_ELEMENTS", "SMOOTH"]
