"""The rules every LUT file passes when it is read: a damaged table never yields a number.

``read_meta`` and ``read_lut`` (``profiler.table``) apply them, so every reader of a
table (``Lut.load``, ``lut info``, estimate, validate, calibrate, merge, prune, a
profiling run extending a table) refuses the same files with the same message:
``FILE: RULE: first offending key or field``.

Stated rules and tolerances:
  * schema: ``schema_version`` present and one this hwprune reads; every column of
    the schema present with its type (any integer width for integer columns);
  * metadata: the fields an estimate depends on (device kind, dtype, batch, memory
    format, timing mode, algos, threads, weights) present and consistent; a runtime
    entry names a known runtime with its version, provider and optimisation level and
    the table's thread count, and a deployment runtime's table is a CPU, eager one; a stored
    calibration has a finite positive slope and a finite per-operator overhead; a
    drift reference is a valid key; tables written since the rules exist carry a
    digest of their metadata, and a changed one is refused (older tables have none);
  * rows: key fields non-negative / positive as their meaning requires; fused chains
    (``conv2d+bn+relu``, ``profiler.fusion``) only in a deployment runtime's table;
    every latency (mean, median, min) finite and in [MIN_MS, MAX_MS], min no larger
    than median and mean; with a drift reference every row's reading too;
  * duplicates: a key present twice is refused when its latencies differ; exact
    duplicates (same mean, median, min and reading) are harmless and tolerated, the
    first kept (``profiler.table.dedupe``). Joining several files is another matter:
    the earlier file wins, and the joined metadata records it (``duplicate_keys``).
Columns an estimate never reads (std, reps, CI, seconds, algo, converged) are not checked.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa

from hwprune.profiler.keyspace import KEY_FIELDS, OpKey
from hwprune.profiler.errors import LutError

LATENCY_COLUMNS = ("mean_ms", "median_ms", "min_ms")
# Bounds of a plausible operator latency. Nothing launches in under a nanosecond, and no
# single operator of a prunable CNN runs for 17 minutes; outside them a value is damage
# (a sign flipped, an exponent byte changed), not a measurement.
MIN_MS, MAX_MS = 1e-6, 1e6
DIGEST_KEY = b"hwprune_sha256"

DEVICE_KINDS = ("cpu", "cuda")
DTYPES = ("fp32", "fp16", "bf16")
MEMORY_FORMATS = ("contiguous", "channels_last")
TIMING_MODES = ("eager", "graph")
ALGOS = ("auto", "all")
WEIGHTS = ("hot", "cold")
RUNTIMES = ("torch", "onnxruntime", "openvino")
# Key fields that must be at least 1; the rest (padding, and the input size a linear
# layer's key leaves at 0) at least 0.
_POSITIVE_KEY_FIELDS = ("c_in", "c_out", "kernel_h", "kernel_w", "stride_h", "stride_w",
                        "dil_h", "dil_w", "groups")
_NON_NEGATIVE_KEY_FIELDS = ("pad_h", "pad_w", "in_h", "in_w")


class LutCheckError(LutError):
    """A LUT file breaks one of this module's rules; names the file, rule and offender."""

    def __init__(self, path: object, rule: str, detail: str) -> None:
        self.path, self.rule, self.detail = str(path), rule, detail
        super().__init__(f"{path}: {rule}: {detail}")


def rows_digest(df: pd.DataFrame) -> str:
    """SHA-256 of the rows an estimate reads (keys and latencies, in file order), in a form
    that survives the Parquet round trip (integer widths, string storage). Stored in the
    metadata, whose own digest covers it: a row edited, added or dropped by hand leaves a
    valid-looking table whose estimate moved, which only this tells apart."""
    h = hashlib.sha256()
    for col in KEY_FIELDS + LATENCY_COLUMNS:
        v = df[col]
        if col in LATENCY_COLUMNS:
            h.update(np.ascontiguousarray(v.to_numpy(dtype=np.float64)).tobytes())
        elif v.dtype == object or pd.api.types.is_string_dtype(v):
            h.update("\x00".join(map(str, v)).encode())
        else:
            h.update(np.ascontiguousarray(v.to_numpy().astype(np.int64)).tobytes())
    return h.hexdigest()


def digest(raw_meta: bytes) -> bytes:
    return hashlib.sha256(raw_meta).hexdigest().encode()


def check_schema_metadata(path: object, schema_meta: dict, schema_version: int,
                          reader_version: str) -> dict:
    """The hwprune metadata of a table's Arrow schema metadata, decoded and checked."""
    raw = schema_meta.get(b"hwprune")
    if raw is None:
        raise LutCheckError(path, "schema", "Parquet file without hwprune metadata (not a LUT)")
    stored = schema_meta.get(DIGEST_KEY)
    if stored is not None and stored != digest(raw):
        raise LutCheckError(path, "metadata", "the hwprune metadata no longer matches the "
                            "digest written with it (edited or damaged since it was written)")
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise LutCheckError(path, "metadata", "hwprune metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise LutCheckError(path, "metadata", "hwprune metadata is not a JSON object")
    if "schema_version" not in meta:
        raise LutCheckError(path, "schema", "no schema_version in the hwprune metadata")
    version = meta["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise LutCheckError(path, "schema", f"schema_version {version!r} is not a version")
    if version > schema_version:
        by = meta.get("written_by")
        raise LutCheckError(path, "schema", f"LUT schema version {version}, written by "
                            f"{by or 'a newer hwprune'}, which reads it; this hwprune "
                            f"({reader_version}) reads version {schema_version}: upgrade hwprune")
    if version < schema_version:
        raise LutCheckError(path, "schema", f"LUT schema version {version} is older than "
                            f"version {schema_version}, the one this hwprune reads")
    check_meta(path, meta)
    return meta


def _bad(path: object, field: str, value: object, want: str) -> LutCheckError:
    return LutCheckError(path, "metadata", f"{field} {value!r} (expected {want})")


def _is_int(v: object, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def check_meta(path: object, meta: dict) -> None:
    """The metadata an estimate depends on: the measuring conditions, calibration, drift."""
    for field, allowed in (("device_kind", DEVICE_KINDS), ("dtype", DTYPES),
                           ("memory_format", MEMORY_FORMATS), ("timing_mode", TIMING_MODES),
                           ("algos", ALGOS)):
        if meta.get(field) not in allowed:
            raise _bad(path, field, meta.get(field), " or ".join(allowed))
    if meta.get("weights", "hot") not in WEIGHTS:
        raise _bad(path, "weights", meta.get("weights"), " or ".join(WEIGHTS))
    if not _is_int(meta.get("batch"), 1):
        raise _bad(path, "batch", meta.get("batch"), "an integer >= 1")
    threads = meta.get("threads")
    if meta["device_kind"] == "cpu" and not _is_int(threads, 1):
        raise _bad(path, "threads", threads, "an integer >= 1 on a cpu table")
    if meta["device_kind"] == "cuda" and threads is not None and not _is_int(threads, 1):
        raise _bad(path, "threads", threads, "null or an integer >= 1")
    if meta["timing_mode"] == "graph" and meta["device_kind"] != "cuda":
        raise _bad(path, "timing_mode", "graph", "eager on a cpu table: graphs are CUDA's")
    for field in ("sources", "configs"):
        v = meta.get(field, [])
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise _bad(path, field, v, "a list of objects")
    hosts = meta.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise _bad(path, "hosts", hosts, "a list of host names")
    for field in ("host", "created"):
        if meta.get(field) is not None and not isinstance(meta[field], str):
            raise _bad(path, field, meta[field], "a string")
    _check_runtime(path, meta)
    blend = meta.get("cache_blend")
    if blend is not None:
        lo, hi = (blend.get(k) if isinstance(blend, dict) else None
                  for k in ("hot_below_bytes", "cold_above_bytes"))
        if not (_is_int(lo, 0) and _is_int(hi, 1) and lo < hi):
            raise _bad(path, "cache_blend", blend, "hot_below_bytes < cold_above_bytes, "
                       "both integers")
    cal = meta.get("calibration")
    if cal is not None:
        fits = cal.get("fits") if isinstance(cal, dict) else None
        if not isinstance(fits, dict):
            raise _bad(path, "calibration", cal, "an object with fits")
        for stat, fit in fits.items():
            slope = fit.get("slope") if isinstance(fit, dict) else None
            per_op = fit.get("per_op_ms") if isinstance(fit, dict) else None
            if not _finite(slope) or slope <= 0:
                raise _bad(path, f"calibration.fits.{stat}.slope", slope, "finite and > 0")
            if not _finite(per_op):
                raise _bad(path, f"calibration.fits.{stat}.per_op_ms", per_op, "finite")
    drift = meta.get("drift")
    if drift is not None:
        key = drift.get("key") if isinstance(drift, dict) else None
        try:
            OpKey(**key) if key else None
        except TypeError:
            raise _bad(path, "drift.key", key, "an operator key") from None
        # The gauge is read where the rows were timed (profiler.drift), or in torch: tables
        # that name no gauge runtime read it in torch (runtime tables too, before 2026-11-29).
        table_rt = (meta.get("runtime") or {}).get("runtime", "torch")
        if isinstance(drift, dict) and drift.get("runtime", "torch") not in ("torch", table_rt):
            raise _bad(path, "drift.runtime", drift.get("runtime"),
                       f"torch or the table's runtime ({table_rt!r})")


def _check_runtime(path: object, meta: dict) -> None:
    rt = meta.get("runtime")
    if rt is None:
        return
    if not isinstance(rt, dict) or rt.get("runtime") not in RUNTIMES:
        raise _bad(path, "runtime", rt, f"an object whose runtime is {' or '.join(RUNTIMES)}")
    if rt["runtime"] == "torch":
        return
    for field in ("version", "provider", "optimization"):
        if not isinstance(rt.get(field), str) or not rt[field]:
            raise _bad(path, f"runtime.{field}", rt.get(field), "a non-empty string")
    if rt.get("threads") != meta.get("threads"):
        raise _bad(path, "runtime.threads", rt.get("threads"),
                   f"the table's threads ({meta.get('threads')!r})")
    if meta["device_kind"] != "cpu" or meta["timing_mode"] != "eager":
        raise _bad(path, "runtime", rt["runtime"], "torch on a non-cpu or graph-mode table: "
                   "the deployment runtimes are timed on the CPU")


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _type_ok(have: pa.DataType, want: pa.DataType) -> bool:
    if pa.types.is_integer(want):
        return pa.types.is_integer(have)
    if pa.types.is_string(want):
        return pa.types.is_string(have) or pa.types.is_large_string(have)
    return have == want


def check_columns(path: object, schema: pa.Schema, expected: pa.Schema,
                  optional: tuple[str, ...]) -> None:
    """Every column present (but the optional ones) with its type."""
    for field in expected:
        if field.name not in schema.names:
            if field.name in optional:
                continue
            missing = [c for c in expected.names if c not in schema.names and c not in optional]
            raise LutCheckError(path, "schema", f"LUT lacks columns {', '.join(missing)}")
        have = schema.field(field.name).type
        if not _type_ok(have, field.type):
            raise LutCheckError(path, "schema", f"column {field.name} is {have}, "
                                f"expected {field.type}")


def _describe_row(row: pd.Series) -> str:
    return (f"{row['op']} c_in {row['c_in']} c_out {row['c_out']} k {row['kernel_h']}x"
            f"{row['kernel_w']} s {row['stride_h']} at {row['in_h']}x{row['in_w']}")


def check_rows(path: object, df: pd.DataFrame, meta: dict) -> None:
    """Key fields, latencies and duplicates of a table's rows (see the module's rules)."""
    if df.empty:
        _check_rows_digest(path, df, meta)
        return
    if df["op"].isna().any():
        raise LutCheckError(path, "keys", f"row {int(df['op'].isna().to_numpy().argmax())} "
                            "has no op")
    for f in _POSITIVE_KEY_FIELDS + _NON_NEGATIVE_KEY_FIELDS:
        low = 1 if f in _POSITIVE_KEY_FIELDS else 0
        bad = (df[f] < low).to_numpy()
        if bad.any():
            row = df.iloc[int(bad.argmax())]
            raise LutCheckError(path, "keys", f"{f} {row[f]} < {low} ({_describe_row(row)})")
    fused = df["op"].astype(str).str.contains("+", regex=False).to_numpy()
    if fused.any() and (meta.get("runtime") or {}).get("runtime", "torch") == "torch":
        raise LutCheckError(path, "keys", f"fused chain {_describe_row(df.iloc[int(fused.argmax())])}"
                            f" in a table timed in torch (only a runtime's table holds them)")
    for col in LATENCY_COLUMNS:
        v = df[col].to_numpy(dtype=float)
        bad = ~(np.isfinite(v) & (v >= MIN_MS) & (v <= MAX_MS))
        if bad.any():
            i = int(bad.argmax())
            raise LutCheckError(path, "latency", f"{col} {float(v[i])!r} is not a latency (finite, "
                                f"{MIN_MS:g}..{MAX_MS:g} ms) at {_describe_row(df.iloc[i])}")
    lo = df["min_ms"].to_numpy(dtype=float) * (1 - 1e-9)  # a mean of equal values may round
    for col in ("median_ms", "mean_ms"):
        bad = lo > df[col].to_numpy(dtype=float)
        if bad.any():
            i = int(bad.argmax())
            raise LutCheckError(path, "latency", f"min_ms above {col} at "
                                f"{_describe_row(df.iloc[i])}")
    if meta.get("cache_blend"):
        # Every row's hot timing is summed into the estimate of a network of small weights.
        for col in ("hot_mean_ms", "hot_median_ms", "hot_min_ms"):
            v = df[col].to_numpy(dtype=float) if col in df.columns else np.full(len(df), np.nan)
            bad = ~(np.isfinite(v) & (v >= MIN_MS) & (v <= MAX_MS))
            if bad.any():
                i = int(bad.argmax())
                raise LutCheckError(path, "latency", f"{col} {float(v[i])!r} is not a latency "
                                    f"(the table blends hot and cold timings) at "
                                    f"{_describe_row(df.iloc[i])}")
    if (meta.get("drift") or {}).get("key") and "ref_ms" in df.columns:
        # Rows are scaled by their drift reading (luts.lookup.drift_factors): one bad
        # reading would rescale every row, so each must be a latency too.
        ref = df["ref_ms"].to_numpy(dtype=float)
        bad = ~(np.isfinite(ref) & (ref >= MIN_MS) & (ref <= MAX_MS))
        if bad.any():
            i = int(bad.argmax())
            raise LutCheckError(path, "latency", f"ref_ms (drift reading) {float(ref[i])!r} at "
                                f"{_describe_row(df.iloc[i])}")
    keyed = df[list(KEY_FIELDS)]
    dup = keyed.duplicated(keep=False).to_numpy()
    if dup.any():
        values = list(LATENCY_COLUMNS) + [c for c in ("ref_ms",) if c in df.columns]
        same = df[list(KEY_FIELDS) + values].astype({c: float for c in values}).fillna(-1.0)
        clash = dup & ~same.duplicated(keep=False).to_numpy()
        if clash.any():
            i = int(clash.argmax())
            raise LutCheckError(path, "duplicates", f"key {_describe_row(df.iloc[i])} is "
                                "present more than once with different latencies")
    # Last, so that a table broken in a way a rule names gets that rule's message.
    _check_rows_digest(path, df, meta)


def _check_rows_digest(path: object, df: pd.DataFrame, meta: dict) -> None:
    stored = meta.get("rows_sha256")
    if stored is not None and stored != rows_digest(df):
        raise LutCheckError(path, "rows", "the rows no longer match the digest written with "
                            "them (a row edited, added or dropped since the table was written)")
