"""Look latencies up in one or many LUT files: exact keys, or interpolation on the channel grid.

Rows are indexed by their *config* (everything but the channel counts) and,
inside a config, by channel counts on a grid: 2-D (c_in x c_out) for convs
and linear layers, 1-D (channels) for channel-wise ops and depthwise convs,
whose output channels follow their input. A key between measured grid points
is interpolated (bilinearly) from its measured neighbours and reported as
such; a key outside the measured grid is an error, never an extrapolation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from hwprune.profiler.calls import kind
from hwprune.profiler.keyspace import OpKey, is_conv
from hwprune.profiler.table import IDENTITY_FIELDS, LutError, check_compatible, read_joined
from hwprune.sizes import Size, canonical, hw, size_text

STATS = ("mean_ms", "median_ms", "min_ms")
# The statistic summed unless another is asked for. The paper stores means; on a shared
# machine one burst inflates a key's mean many times over and its median not at all. The
# demo's step-32 table on the 2-core VM, calibrated on the same 8 variants, predicted
# left-out ones at 9.5% (means) against 1.7% (medians) (2026-11-29); and the pruner's
# measured budgets compare medians.
DEFAULT_STAT = "median_ms"


class LutMissError(LutError):
    """A key the table cannot answer (outside its grid, or not measured in strict mode)."""


def table_input_size(meta: dict, model: str, asked: Size | None, default: Size) -> Size:
    """The input size to estimate ``model`` at with a table: ``asked`` if given, else the
    size the table profiled ``model`` at, else ``default`` (the model's own). Sizes are a
    side or (height, width) (``hwprune.sizes``).

    A table profiled for ``model`` at other sizes only would miss every key of the asked
    one: refused, naming both sizes.
    """
    sizes = sorted({canonical(s["input_size"]) for s in (meta or {}).get("sources", [])
                    if s.get("model") == model and s.get("input_size")}, key=hw)
    if asked is None:
        return sizes[0] if sizes else canonical(default)
    asked = canonical(asked)
    if sizes and asked not in sizes:
        had = ", ".join(size_text(s, " px") for s in sizes)
        raise LutError(f"the table was profiled for {model} at {had}, not at the "
                       f"{size_text(asked, ' px')} asked for: profile at "
                       f"{size_text(asked, ' px')}, or use --input-size {size_text(sizes[0], '')}")
    return asked


def is_channelwise(op: str, c_in: int, groups: int) -> bool:
    """One channel axis: element-wise ops, pools, BatchNorm and depthwise convs."""
    if is_conv(op):
        return groups > 1 and groups == c_in
    return op != "linear"


def config_of(key: OpKey) -> tuple:
    """The key without channel counts; a depthwise conv's groups follow its channels."""
    groups = -1 if is_channelwise(key.op, key.c_in, key.groups) else key.groups
    return (key.op, key.kernel_h, key.kernel_w, key.stride_h, key.stride_w, key.pad_h,
            key.pad_w, key.dil_h, key.dil_w, groups, key.bias, key.inplace, key.in_h, key.in_w)


def describe_config(cfg: tuple) -> str:
    op, kh, kw, sh, _, _, _, _, _, g, bias, inplace, h, w = cfg
    op = kind(op)  # a call key's op holds its whole description (profiler.calls)
    extra = f" {kh}x{kw}/s{sh}" if is_conv(op) or "pool" in op else ""
    grp = " depthwise" if g == -1 and is_conv(op) else f" groups {g}" if g > 1 else ""
    return f"{op}{extra}{grp} at {h}x{w}" + (" in-place" if inplace else "")


@dataclass
class _Grid:
    rows: np.ndarray          # measured c_in values, ascending
    cols: np.ndarray          # measured c_out values (a single 0 for 1-D grids)
    ms: np.ndarray            # (rows, cols) latency, NaN where not measured
    one_d: bool


def _bracket(values: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the neighbours below/above each query, the weight of the upper one, and
    whether the query lies inside the measured range."""
    hi = np.searchsorted(values, q, side="left").clip(0, len(values) - 1)
    exact = values[hi] == q
    lo = np.where(exact, hi, (hi - 1).clip(0))
    inside = (q >= values[0]) & (q <= values[-1])
    span = (values[hi] - values[lo]).astype(float)
    w = np.where(span > 0, (q - values[lo]) / np.where(span > 0, span, 1), 0.0)
    return lo, hi, w, inside


def drift_factors(rows: pd.DataFrame, meta: dict) -> np.ndarray | None:
    """Per row, the table's fastest drift-reference reading over the row's own
    (``profiler.drift``): a row timed while the machine ran 10% slower than at its fastest
    is scaled down by 10%. None, rows used as measured, when the table has no drift
    reference or any row lacks a reading (an older table, or one joined from runs of
    different references)."""
    level = drift_level_ms(rows, meta)
    return None if level is None else level / rows["ref_ms"].to_numpy(dtype=float)


def drift_level_ms(rows: pd.DataFrame, meta: dict) -> float | None:
    """The reading every row is put on, or None as in ``drift_factors``: the fastest.

    Other jobs on a shared machine only ever slow it down, so the fastest reading is the
    one speed a later run on a quiet moment meets again. The median was tried first: a
    demo scan beside two other jobs read 0.40-0.54 ms, its rows went onto the median's
    0.48 ms, and the validation that followed on a quieter machine (0.42 ms) measured
    every variant 13% faster than the table said (R² identity 0.79, linear 0.99).
    """
    if not (meta.get("drift") or {}).get("key") or "ref_ms" not in rows or rows.empty:
        return None
    ref = rows["ref_ms"].to_numpy(dtype=float)
    if not (np.isfinite(ref).all() and (ref > 0).all()):
        return None
    return float(ref.min())


def _index(keys: list[OpKey], values: np.ndarray, factors: np.ndarray | None
           ) -> dict[tuple, _Grid]:
    """Rows grouped by config onto their channel grids (NaN where not measured)."""
    if factors is not None:
        values = values * factors
    buckets: dict[tuple, list[tuple[int, int, float]]] = {}
    for key, ms in zip(keys, values):
        buckets.setdefault(config_of(key), []).append((key.c_in, key.c_out, ms))
    grids = {}
    for cfg, items in buckets.items():
        one_d = cfg[9] == -1 or not (is_conv(cfg[0]) or cfg[0] == "linear")
        r = np.unique([i[0] for i in items])
        c = np.array([0]) if one_d else np.unique([i[1] for i in items])
        grid = np.full((len(r), len(c)), np.nan)
        for ci, co, ms in items:
            grid[np.searchsorted(r, ci), 0 if one_d else np.searchsorted(c, co)] = ms
        grids[cfg] = _Grid(r, c, grid, one_d)
    return grids


_STAMPS = ("updated", "written_by", "rows_sha256", "schema_version")


class Lut:
    """An in-memory index over LUT rows, answering latency questions in milliseconds."""

    def __init__(self, rows: pd.DataFrame, meta: dict, stat: str = DEFAULT_STAT,
                 source: str = "<memory>") -> None:
        if stat not in STATS:
            raise LutError(f"unknown statistic '{stat}' (choose {', '.join(STATS)})")
        self.meta, self.stat, self.source = meta, stat, source
        self.rows = rows
        keys = [OpKey(**{k: v for k, v in r.items() if k in OpKey.__dataclass_fields__})
                for r in rows.to_dict("records")]
        factors = drift_factors(rows, meta)
        self._grids = _index(keys, rows[stat].to_numpy(dtype=float), factors)
        # A runtime table times every key with cold and with hot weights (profiler.run):
        # ``cache_blend`` says between which network weight sizes one gives way to the other.
        self._hot_grids: dict[tuple, _Grid] | None = None
        hot = f"hot_{stat}"
        if meta.get("cache_blend") and hot in rows and rows[hot].notna().all():
            self._hot_grids = _index(keys, rows[hot].to_numpy(dtype=float), factors)

    def cold_share(self, weight_bytes: float | None) -> float:
        """How much of the cold timings a network with ``weight_bytes`` of weights gets: 0
        when its weights fit in a core's own cache (L2), 1 from half the last-level cache
        up (weights that other data keeps evicting come from memory), linear between. 1
        for a table without hot timings."""
        blend = self.meta.get("cache_blend")
        if self._hot_grids is None or weight_bytes is None or not blend:
            return 1.0
        lo, hi = blend["hot_below_bytes"], blend["cold_above_bytes"]
        return float(np.clip((weight_bytes - lo) / max(1, hi - lo), 0.0, 1.0))

    @classmethod
    def load(cls, paths: str | os.PathLike | Sequence[str | os.PathLike], stat: str = DEFAULT_STAT,
             target: dict | None = None, allow_mismatch: bool = False) -> "Lut":
        """Read one or many LUT files measured under the same conditions.

        ``target`` (any of device_kind, device_name, dtype, batch, memory_format,
        timing_mode, ...) is what the caller will compare against; a table measured
        otherwise is refused unless ``allow_mismatch``.
        """
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        rows, meta = read_joined(paths, verb="use")
        lut = cls(rows, meta, stat, ", ".join(map(str, paths)))
        if target:
            lut.check_target(target, allow_mismatch)
        return lut

    def fingerprint(self) -> str:
        """A digest of the rows and metadata: what names a table held only in memory (a
        resumed pruning run must use the same table as the interrupted one)."""
        import hashlib
        import json

        # Not what writing or reading stamps on it (reading several files stamps 'updated').
        meta = {k: v for k, v in self.meta.items() if k not in _STAMPS}
        digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
        digest.update(pd.util.hash_pandas_object(self.rows, index=False).to_numpy().tobytes())
        return f"lut-sha256:{digest.hexdigest()[:16]}"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as a LUT file (atomically); this Lut then reads from it."""
        from hwprune.profiler.table import write_lut

        path = write_lut(self.rows, self.meta, path)
        self.source = str(path)
        return path

    @property
    def in_memory(self) -> bool:
        """Whether no file is behind this table (made in memory, or its file was removed)."""
        return not self.source or self.source == "<memory>" or \
            not all(Path(p).is_file() for p in str(self.source).split(", "))

    @property
    def drift_level_ms(self) -> float | None:
        """The drift reference's reading that this table's rows are put on; a measurement
        taken beside a reading r is put on the same speed by ``x level / r``."""
        return drift_level_ms(self.rows, self.meta)

    @property
    def drift_key(self) -> OpKey | None:
        d = (self.meta.get("drift") or {}).get("key")
        return OpKey(**d) if d and self.drift_level_ms is not None else None

    @property
    def drift_runtime(self) -> str:
        """Where the drift key is read: the table's runtime (``profiler.drift``)."""
        return (self.meta.get("drift") or {}).get("runtime", "torch")

    @property
    def calibration(self) -> dict | None:
        """The in-network calibration of this table for its statistic (``luts.calibrate``):
        ``{"slope", "per_op_ms", ...}``, or None when the table has none or its fit
        predicted held-out variants worse than the plain operator sum (``applied`` False)."""
        cal = (self.meta.get("calibration") or {}).get("fits", {}).get(self.stat)
        if not cal or cal.get("applied") is False:
            return None
        return cal if np.isfinite(cal.get("slope", np.nan)) else None

    def in_network_ms(self, operator_sum_ms: float | np.ndarray, n_ops: int) -> float | np.ndarray:
        """A network's latency from the sum of its operators' rows: operators timed alone run
        faster than inside a network (caches and branch predictors warm, buffers reused), so
        a calibrated table scales the sum and adds a per-operator overhead; without a
        calibration the sum itself."""
        cal = self.calibration
        if cal is None:
            return operator_sum_ms
        return cal["slope"] * operator_sum_ms + cal["per_op_ms"] * n_ops

    @property
    def runtime(self) -> str:
        """The runtime the rows were timed in: ``torch`` for every table without a
        ``runtime`` entry (all tables before issue 18)."""
        return (self.meta.get("runtime") or {}).get("runtime", "torch")

    def check_runtime(self, runtime: str, allow_mismatch: bool = False) -> None:
        """Refuse to compare this table with measurements in another runtime: runtimes fuse
        and schedule operators differently, so its rows do not describe that runtime. The
        deployment runtimes are measured on the CPU, so only with a CPU table."""
        if runtime != "torch" and self.meta.get("device_kind") != "cpu":
            raise LutError(f"the deployment runtimes are timed on the CPU here; LUT "
                           f"{self.source} is of a {self.meta.get('device_kind')} device")
        if runtime != self.runtime and not allow_mismatch:
            raise LutError(f"LUT {self.source} was timed in {self.runtime}, not {runtime}: "
                           f"its latencies do not describe {runtime} (pass --allow-mismatch "
                           f"to compare them anyway)")

    def check_target(self, target: dict, allow_mismatch: bool = False) -> None:
        wanted = {k: v for k, v in target.items() if k in IDENTITY_FIELDS and v is not None}
        have = {k: self.meta.get(k) for k in wanted}
        if have != wanted and not allow_mismatch:
            check_compatible(wanted, have, f"LUT {self.source} does not match the target",
                             "the LUT", "the target")

    def grid(self, key: OpKey) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(c_in values, c_out values, latency matrix with NaN where unmeasured) of the
        2-D grid holding ``key``'s config; None for 1-D configs or unprofiled ones."""
        g = self._grids.get(config_of(key))
        return None if g is None or g.one_d else (g.rows, g.cols, g.ms)

    def lookup(self, keys: Iterable[OpKey], strict: bool = False,
               names: Sequence[str] | None = None,
               weight_bytes: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Latency (ms) of each key and whether it was measured exactly (else interpolated).

        ``weight_bytes``: the weights of the network the keys belong to, for a table with
        hot and cold timings (``cold_share``); without it, the cold timings."""
        keys = list(keys)
        w = self.cold_share(weight_bytes)
        if w < 1.0:
            hot_ms, exact = self._lookup_all(keys, strict, names, self._hot_grids)
            cold_ms, _ = self._lookup_all(keys, strict, names, self._grids)
            return (1 - w) * hot_ms + w * cold_ms, exact
        return self._lookup_all(keys, strict, names, self._grids)

    def _lookup_all(self, keys: list[OpKey], strict: bool, names, grids: dict
                    ) -> tuple[np.ndarray, np.ndarray]:
        ms = np.empty(len(keys))
        exact = np.zeros(len(keys), dtype=bool)
        by_cfg: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            by_cfg.setdefault(config_of(k), []).append(i)
        for cfg, idx in by_cfg.items():
            idx_arr = np.asarray(idx)
            c_in = np.array([keys[i].c_in for i in idx])
            c_out = np.array([keys[i].c_out for i in idx])
            ms[idx_arr], exact[idx_arr] = self._lookup_cfg(cfg, c_in, c_out, strict, keys, idx,
                                                           names, grids)
        return ms, exact

    def _lookup_cfg(self, cfg, c_in, c_out, strict, keys, idx, names, grids):
        grid = grids.get(cfg)

        def miss(j: int, why: str) -> LutMissError:
            who = f" (layer {names[idx[j]]})" if names else ""
            k = keys[idx[j]]
            return LutMissError(f"LUT {self.source}: {describe_config(cfg)}, c_in {k.c_in}, "
                                f"c_out {k.c_out}{who}: {why}")

        if grid is None:
            near = [describe_config(c) for c in self._grids if c[0] == cfg[0]][:3]
            raise miss(0, "this operator config was never profiled"
                       + (f" (the LUT has e.g. {'; '.join(near)})" if near else ""))
        r_lo, r_hi, r_w, r_in = _bracket(grid.rows, c_in)
        if grid.one_d:
            c_lo = c_hi = np.zeros_like(r_lo)
            c_w, c_inside = np.zeros(len(c_in)), np.ones(len(c_in), dtype=bool)
        else:
            c_lo, c_hi, c_w, c_inside = _bracket(grid.cols, c_out)
        bad = ~(r_in & c_inside)
        if bad.any():
            j = int(np.argmax(bad))
            raise miss(j, f"outside the measured grid (c_in {grid.rows[0]}..{grid.rows[-1]}"
                       + ("" if grid.one_d else f", c_out {grid.cols[0]}..{grid.cols[-1]}") + ")")
        g = grid.ms
        corners = np.stack([g[r_lo, c_lo], g[r_lo, c_hi], g[r_hi, c_lo], g[r_hi, c_hi]])
        exact = (r_w == 0) & (c_w == 0) & (grid.rows[r_lo] == c_in) & \
            (grid.one_d | (grid.cols[c_lo] == c_out))
        exact &= ~np.isnan(corners[0])
        if strict and not exact.all():
            raise miss(int(np.argmin(exact)), "not measured (strict mode does not interpolate)")
        if np.isnan(corners).any(axis=0).any():
            j = int(np.argmax(np.isnan(corners).any(axis=0)))
            raise miss(j, "no measured neighbours to interpolate from")
        top = corners[0] * (1 - c_w) + corners[1] * c_w
        bottom = corners[2] * (1 - c_w) + corners[3] * c_w
        return top * (1 - r_w) + bottom * r_w, exact


def as_lut(luts: "Lut | str | os.PathLike | Sequence[str | os.PathLike]",
           stat: str = DEFAULT_STAT) -> Lut:
    """A table given as a ``Lut`` (used as it is, re-indexed for another ``stat``) or as the
    path(s) of its files (read)."""
    if isinstance(luts, Lut):
        return luts if luts.stat == stat else Lut(luts.rows, luts.meta, stat, luts.source)
    return Lut.load(luts, stat=stat)


def lut_label(luts: "Lut | str | os.PathLike | Sequence[str | os.PathLike]") -> list[str]:
    """How reports and resume checks name a table: its files' absolute paths, or the digest
    of one held in memory."""
    if isinstance(luts, Lut):
        return [luts.fingerprint()] if luts.in_memory else \
            [str(Path(p).resolve()) for p in str(luts.source).split(", ")]
    paths = [luts] if isinstance(luts, (str, os.PathLike)) else list(luts)
    return [str(Path(p).resolve()) for p in paths]
