"""Crash-safe storage of a profiling run: one atomic file per measured key, then one LUT.

While a run is in flight its rows live in ``OUT.parts/`` next to the output:
``manifest.json`` (the run's metadata) and a one-row Parquet file per key,
each written by temp file + rename, so a ``kill -9`` loses at most the key in
flight. Every ``compact_every`` keys the small files are folded into a chunk
file. ``finalize`` writes ``OUT`` atomically (joining rows already in an
existing ``OUT``) and removes the parts directory.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hwprune.profiler.keyspace import OpKey
from hwprune.profiler.table import (COLUMNS, atomic_write_bytes, check_compatible, dedupe,
                            identity_of, key_of_row, merge_meta, read_lut, to_arrow, write_lut)


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


class PartStore:
    """Resumable, append-only row store for one output LUT."""

    def __init__(self, out: str | Path, meta: dict, compact_every: int = 256) -> None:
        self.out = Path(out)
        self.dir = parts_dir(self.out)
        self.meta = meta
        self.compact_every = compact_every
        self._pending: list[Path] = []
        self._existing: pd.DataFrame | None = None
        self._existing_meta: dict | None = None

    def open(self) -> set[OpKey]:
        """Check earlier work is compatible and return the keys already measured."""
        done: set[OpKey] = set()
        mine = identity_of(self.meta)
        if self.out.exists():
            df, meta = read_lut(self.out)
            check_compatible(mine, identity_of(meta), f"cannot add to {self.out}")
            self._existing, self._existing_meta = df, meta
            done.update(key_of_row(r) for r in df.to_dict("records"))
        manifest = self.dir / "manifest.json"
        for stale in self.dir.glob(".*.tmp"):  # left by a kill in the middle of a write
            stale.unlink(missing_ok=True)
        if manifest.exists():
            check_compatible(mine, identity_of(json.loads(manifest.read_text())),
                             f"cannot resume the run in {self.dir}")
            df = self._read_parts()
            done.update(key_of_row(r) for r in df.to_dict("records"))
            self._pending = sorted(self.dir.glob("key-*.parquet"))
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(manifest, lambda f: f.write(json.dumps(self.meta, indent=1).encode()))
        return done

    @property
    def existing_meta(self) -> dict | None:
        """The metadata of the output file this run adds to (after ``open``), if any."""
        return self._existing_meta

    def _read_parts(self) -> pd.DataFrame:
        frames = []
        for p in sorted(self.dir.glob("*.parquet")):
            try:
                frames.append(pq.read_table(p).to_pandas())
            except (pa.ArrowException, OSError):
                p.unlink(missing_ok=True)  # cannot happen with atomic writes; re-measure if it does
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)

    def add(self, key: OpKey, stats: dict) -> None:
        row = {**key.as_dict(), **stats}
        table = to_arrow([row], {})
        path = self.dir / f"key-{key.digest().hex()[:20]}.parquet"
        atomic_write_bytes(path, lambda f: pq.write_table(table, f))
        self._pending.append(path)
        if len(self._pending) >= self.compact_every:
            self.compact()

    def compact(self) -> None:
        """Fold the per-key files into one chunk. A crash in between only leaves duplicates."""
        if not self._pending:
            return
        df = pd.concat([pq.read_table(p).to_pandas() for p in self._pending], ignore_index=True)
        table = to_arrow(df, {})
        atomic_write_bytes(self.dir / f"chunk-{uuid.uuid4().hex[:12]}.parquet",
                           lambda f: pq.write_table(table, f))
        for p in self._pending:
            p.unlink(missing_ok=True)
        self._pending = []

    def finalize(self) -> Path | None:
        """Write the output LUT (earlier rows first, so nothing is replaced) and drop the parts.

        Returns None, writing nothing, when there are no rows at all (an empty shard).
        """
        parts = self._read_parts()
        if self._existing is not None and (parts is None or not len(parts)):
            # Nothing new (a rerun of a complete table): leave the file as it is. Merged with
            # this run's metadata, which has no gauge readings, it lost its drift entry.
            shutil.rmtree(self.dir, ignore_errors=True)
            return self.out
        frames = [f for f in (self._existing, parts) if f is not None and len(f)]
        if not frames:
            shutil.rmtree(self.dir, ignore_errors=True)
            return None
        metas = [m for m in (self._existing_meta, self.meta) if m]
        write_lut(dedupe(pd.concat(frames, ignore_index=True)), merge_meta(metas), self.out)
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.out
