"""The LUT file: Parquet, one row per key, statistics per row, run metadata in the footer.

``pandas.read_parquet(path)`` reads a LUT with no help from hwprune; the
metadata is JSON under the ``hwprune`` key of the Arrow schema metadata.
Every write is atomic (temp file in the same directory, then rename).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hwprune.profiler.check import (DIGEST_KEY, check_columns, check_rows, check_schema_metadata,
                            digest, rows_digest)
from hwprune.profiler.errors import LutError  # re-exported: readers of tables import it from here
from hwprune.profiler.keyspace import KEY_FIELDS, OpKey
from hwprune.zoo.atomic import atomic_write_bytes  # re-exported: store, luts and pruner import it here
from hwprune.sizes import canonical

SCHEMA_VERSION = 1
META_KEY = b"hwprune"
IDENTITY_FIELDS = ("device_kind", "device_name", "dtype", "batch", "memory_format",
                   "timing_mode", "algos", "threads", "weights", "runtime")

_INT = pa.int32()
SCHEMA = pa.schema(
    [("op", pa.string())]
    + [(f, _INT) for f in KEY_FIELDS if f not in ("op", "bias", "inplace")]
    + [("bias", pa.bool_()), ("inplace", pa.bool_())]
    + [("mean_ms", pa.float64()), ("median_ms", pa.float64()), ("min_ms", pa.float64()),
       ("std_ms", pa.float64()), ("reps", pa.int32()), ("ci95_rel", pa.float64()),
       ("converged", pa.bool_()), ("algo", pa.string()), ("seconds", pa.float64()),
       # the drift reference's reading when the row was measured (profiler.drift)
       ("ref_ms", pa.float64()),
       # a runtime table's keys timed with hot weights too (luts.lookup: the cache blend)
       ("hot_mean_ms", pa.float64()), ("hot_median_ms", pa.float64()),
       ("hot_min_ms", pa.float64())]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
# Columns a table may lack (written before they existed, or by a run without them): read
# as NaN. Still schema version 1: an older hwprune reading a newer table ignores them.
HOT_COLUMNS: tuple[str, ...] = ("hot_mean_ms", "hot_median_ms", "hot_min_ms")
OPTIONAL_COLUMNS: tuple[str, ...] = ("ref_ms", *HOT_COLUMNS)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def to_arrow(rows: pd.DataFrame | Sequence[dict], meta: dict) -> pa.Table:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=COLUMNS)
    df = _with_optional(df)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise LutError(f"rows lack columns {missing}")
    table = pa.Table.from_pandas(df[list(COLUMNS)], schema=SCHEMA, preserve_index=False)

    full = dict(table.schema.metadata or {})
    raw = json.dumps({**meta, "schema_version": SCHEMA_VERSION,
                      "written_by": f"hwprune {_hwprune_version()}",
                      "rows_sha256": rows_digest(df)}).encode()
    # The digest lets a reader tell damaged or edited metadata from what was written.
    full[META_KEY], full[DIGEST_KEY] = raw, digest(raw)
    return table.replace_schema_metadata(full)


def _hwprune_version() -> str:
    from hwprune import __version__

    return __version__


def write_lut(rows: pd.DataFrame | Sequence[dict], meta: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    table = to_arrow(rows, meta)
    # Page checksums: a flipped byte in the rows is an error on reading, not a latency.
    atomic_write_bytes(path, lambda f: pq.write_table(table, f, write_page_checksum=True))
    return path


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of a LUT, after the schema and metadata rules of ``profiler.check``."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise LutError(f"{path}: no such LUT file") from None
    except (pa.ArrowException, OSError, ValueError) as exc:  # a damaged name: UnicodeDecodeError
        raise LutError(f"{path}: not a readable Parquet file ({type(exc).__name__}: "
                       f"{exc})") from None
    meta = check_schema_metadata(path, dict(schema.metadata or {}), SCHEMA_VERSION,
                                 _hwprune_version())
    check_columns(path, schema, SCHEMA, OPTIONAL_COLUMNS)
    return meta


def read_lut(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """Rows and metadata of a LUT, with a clear error for anything wrong with the file:
    every rule of ``profiler.check`` holds for what this returns."""
    meta = read_meta(path)
    try:
        # Pandas' own metadata only restores an index a LUT never has; dropping it keeps a
        # damaged copy of it (pyarrow decodes it even when told to ignore it) from pandas.
        df = pq.read_table(path, page_checksum_verification=True) \
            .replace_schema_metadata(None).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise LutError(f"{path}: cannot read LUT rows ({type(exc).__name__}: {exc})") from None
    # Checked before the optional columns are filled in: a reading stored as NaN is damage
    # (it would turn the drift correction off), a column an older hwprune never wrote is not.
    check_rows(path, df, meta)
    return _with_optional(df), meta


def _with_optional(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in OPTIONAL_COLUMNS if c not in df.columns]
    return df.assign(**{c: float("nan") for c in missing}) if missing else df


def runtime_identity(meta: dict) -> str:
    """The runtime a table's rows were timed in, with what its timings depend on:
    ``torch`` for every table without a ``runtime`` entry (all tables before them)."""
    rt = meta.get("runtime") or {}
    if not rt or rt.get("runtime", "torch") == "torch":
        return "torch"
    return " ".join(str(rt.get(k)) for k in ("runtime", "version", "provider", "optimization"))


def identity_of(meta: dict) -> dict:
    ident = {k: meta.get(k, "hot" if k == "weights" else None) for k in IDENTITY_FIELDS}
    ident["runtime"] = runtime_identity(meta)
    return ident


def check_compatible(expected: dict, found: dict, where: str, found_as: str = "the existing table",
                     expected_as: str = "this run") -> None:
    """Refuse to mix rows measured on another device, dtype, batch, format, mode or thread count."""
    diffs = [f"{k} {found.get(k)!r} in {found_as}, {expected.get(k)!r} in {expected_as}"
             for k in IDENTITY_FIELDS if found.get(k) != expected.get(k)]
    if diffs:
        raise LutError(f"{where}: measured under other conditions ({'; '.join(diffs)})")


def key_of_row(row: dict) -> OpKey:
    return OpKey(**{f: (bool(row[f]) if f in ("bias", "inplace") else
                        str(row[f]) if f == "op" else int(row[f])) for f in KEY_FIELDS})


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per key; the first occurrence wins (a resumed run never re-measures a key)."""
    return df.drop_duplicates(subset=list(KEY_FIELDS), keep="first").sort_values(
        list(KEY_FIELDS)).reset_index(drop=True)


def _union(lists: Iterable[list]) -> list:
    seen, out = set(), []
    for items in lists:
        for item in items or []:
            tag = json.dumps(item, sort_keys=True)
            if tag not in seen:
                seen.add(tag)
                out.append(item)
    return out


def _whole_grids(sources: list[dict]) -> list[dict]:
    """Drop a partial source (only listed keys) once a whole-grid scan of the same model,
    size and step (all layers) is in the table: the rows now cover the grid."""
    def tag(s: dict) -> tuple:
        size = s.get("input_size")
        return s.get("model"), canonical(size) if size else None, s.get("step")

    whole = {tag(s) for s in sources if not s.get("keys") and not s.get("layers")}
    return [s for s in sources if not (s.get("keys") and tag(s) in whole)]


def merge_meta(metas: Sequence[dict]) -> dict:
    merged = dict(metas[0])
    merged["sources"] = _whole_grids(_union(m.get("sources", []) for m in metas))
    merged["configs"] = _union(m.get("configs", []) for m in metas)
    merged["created"] = min(m.get("created", now_iso()) for m in metas)
    merged["updated"] = now_iso()
    merged["hosts"] = sorted({h for m in metas for h in m.get("hosts", [m.get("host")]) if h})
    tallies = [m["engines_skipped"] for m in metas if m.get("engines_skipped")]
    if tallies:  # failed candidates (profiler.run._count_skipped) of every part
        errors: dict[str, int] = {}
        for t in tallies:
            for err, n in t["errors"].items():
                errors[err] = errors.get(err, 0) + n
        merged["engines_skipped"] = {"keys": sum(t["keys"] for t in tallies), "errors": errors}
    # Readings of different reference keys (profiler.drift) are on different scales: the
    # joined rows cannot be put on one machine speed, and are then used as measured.
    if len({json.dumps((m.get("drift") or {}).get("key"), sort_keys=True) for m in metas}) > 1:
        merged.pop("drift", None)
    return merged


def read_joined(paths: Sequence[str | os.PathLike], verb: str = "merge"
                ) -> tuple[pd.DataFrame, dict]:
    """Rows (one per key, earlier files first) and merged metadata of LUT files that were
    all measured under the same conditions; a file measured otherwise is refused.

    Joining two or more files drops any in-network calibration (``luts.calibrate``): it
    is a fit against the operator sums of one table's rows for one model, which the
    joined rows no longer are. ``calibrations_dropped`` tells which inputs carried one.
    """
    if not paths:
        raise LutError(f"nothing to {verb}: give at least one LUT file")
    frames, metas = [], []
    for p in paths:
        df, meta = read_lut(p)
        if metas:
            check_compatible(identity_of(metas[0]), identity_of(meta),
                             f"cannot {verb} {p} with {paths[0]}", Path(p).name,
                             Path(paths[0]).name)
        frames.append(df)
        metas.append(meta)
    meta = merge_meta(metas)
    if len(metas) > 1:
        meta.pop("calibration", None)
    rows = pd.concat(frames, ignore_index=True)
    joined = dedupe(rows)
    if len(joined) < len(rows):
        # Each file has one row per key (profiler.check); a key in several files keeps
        # the row of the file listed first, and the joined metadata says so.
        meta["duplicate_keys"] = {"rule": "the file listed first wins",
                                  "rows_dropped": len(rows) - len(joined),
                                  "files": [str(p) for p in paths]}
    return joined, meta


def calibrations_dropped(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, str]]:
    """(file, calibrated model) of each input whose calibration joining ``paths`` drops."""
    if len(paths) < 2:
        return []
    out = []
    for p in paths:
        cal = read_meta(p).get("calibration")
        if cal:
            out.append((Path(p), str(cal.get("model") or "?")))
    return out


def merge_luts(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Join LUT files (shards of one run, or tables of several models) into ``out``.

    The joined table carries no calibration (see ``read_joined``); the one file of a
    single-file "merge" keeps its own.
    """
    return write_lut(*read_joined(paths), out)
