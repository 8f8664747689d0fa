"""Property: a corrupted LUT either raises the LUT's own error with a message, or gives
exactly the uncorrupted estimate; never another exception, never a non-finite or
non-positive estimate. Each test prints how many corruptions it tried and how they ended."""

import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwprune.luts import Lut, LutError
from hwprune.luts.estimate import estimate_trace
from hwprune.profiler.check import DIGEST_KEY
from hwprune.profiler.keyspace import trace_model
from hwprune.profiler.table import read_lut, write_lut
from hwprune.zoo import resolve_model

SETTINGS = settings(max_examples=400, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
BAD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-3, 1e7,
                              1e300, -1e300])
BAD_INTS = st.sampled_from([0, -1, -64, 2**31 - 1, -(2**31)])


@pytest.fixture(scope="module")
def case(demo_lut, tmp_path_factory):
    """The demo table rewritten by this hwprune (digest, page checksums), its estimate."""
    d = tmp_path_factory.mktemp("corrupt")
    df, meta = read_lut(demo_lut)
    src = write_lut(df, meta, d / "clean.parquet")
    trace = trace_model(resolve_model("demo").module, 32, 1)
    total = estimate_trace(trace, Lut.load(src)).total_ms
    assert math.isfinite(total) and total > 0
    return src, d / "bad.parquet", trace, total


def _outcome(path, trace, total, tally, kind):
    try:
        got = estimate_trace(trace, Lut.load(path)).total_ms
    except LutError as exc:
        assert str(exc).strip(), kind
        tally[f"{kind}: refused"] += 1
        return
    assert math.isfinite(got) and got > 0, (kind, got)
    assert got == total, (kind, got, total)
    tally[f"{kind}: same estimate"] += 1


def _report(name, tally, record_property):
    tried = sum(tally.values())
    # shown at the end of the run (tests/conftest.py), with or without xdist workers
    record_property("summary", f"{name}: {tried} corruptions tried; " + ", ".join(
        f"{k} {v}" for k, v in sorted(tally.items())))
    return tried


def test_damaged_bytes(case, record_property):
    src, bad, trace, total = case
    raw = src.read_bytes()
    tally = Counter()

    @SETTINGS
    @given(st.data())
    def prop(data):
        if data.draw(st.booleans()):
            cut = data.draw(st.integers(0, len(raw) - 1))
            bad.write_bytes(raw[:cut])
            kind = "cut"
        else:
            buf = bytearray(raw)
            for _ in range(data.draw(st.integers(1, 3))):
                i = data.draw(st.integers(0, len(raw) - 1))
                buf[i] ^= data.draw(st.integers(1, 255))
            bad.write_bytes(bytes(buf))
            kind = "flipped"
        _outcome(bad, trace, total, tally, kind)

    prop()
    assert _report("LUT bytes", tally, record_property) >= 400


def _write(bad, df, md):
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(md),
                   bad)


def test_edited_rows_columns_and_metadata(case, record_property):
    src, bad, trace, total = case
    table = pq.read_table(src)
    md = dict(table.schema.metadata)
    df0 = table.to_pandas()
    latency = ["mean_ms", "median_ms", "min_ms", "ref_ms"]
    tally = Counter()

    @SETTINGS
    @given(st.data())
    def prop(data):
        df = df0.copy()
        meta = dict(md)
        kind = data.draw(st.sampled_from(["value", "int", "dup", "dup-changed", "drop-rows",
                                          "drop-col", "retype", "meta"]))
        row = data.draw(st.integers(0, len(df) - 1))
        if kind == "value":
            col = data.draw(st.sampled_from(latency + ["std_ms", "ci95_rel", "seconds"]))
            df.loc[row, col] = data.draw(BAD_FLOATS)
            kind += f" {col}"
        elif kind == "int":
            col = data.draw(st.sampled_from(["c_in", "c_out", "kernel_h", "stride_w", "pad_h",
                                             "groups", "in_h", "reps"]))
            df.loc[row, col] = data.draw(BAD_INTS)
        elif kind == "dup":
            n = data.draw(st.integers(1, 5))
            df = pd.concat([df, df.iloc[row:row + n]], ignore_index=True)
        elif kind == "dup-changed":
            copy = df.iloc[[row]].copy()
            col = data.draw(st.sampled_from(latency))
            copy[col] = copy[col] * data.draw(st.sampled_from([3.0, 0.5, 1.0000001]))
            df = pd.concat([df, copy], ignore_index=True)
        elif kind == "drop-rows":
            df = df.drop(index=df.index[row:row + data.draw(st.integers(1, 20))])
        elif kind == "drop-col":
            df = df.drop(columns=data.draw(st.sampled_from(list(df.columns))))
        elif kind == "retype":
            col = data.draw(st.sampled_from(list(df.columns)))
            to = data.draw(st.sampled_from(["str", "float32", "int64", "float64"]))
            try:
                df[col] = df[col].astype(to)
            except (ValueError, TypeError):
                df[col] = df[col].astype(str)
            kind += f" {col} {to}"
        else:  # an entry of the hwprune metadata removed or changed, digest left as written
            entries = json.loads(md[b"hwprune"])
            undigested = data.draw(st.booleans())
            # Without the digest (a table written before it existed), dropping the drift
            # reference leaves a valid table of rows used as measured: a different
            # estimate no rule can tell from a real one. Only the digest catches that.
            name = data.draw(st.sampled_from([e for e in sorted(entries) if not (
                undigested and e in ("drift", "calibration"))]))
            if data.draw(st.booleans()):
                entries.pop(name)
            else:
                entries[name] = data.draw(st.sampled_from([None, -1, 0, 2, "x", True, [], {}]))
            meta[b"hwprune"] = json.dumps(entries).encode()
            if undigested:
                meta.pop(DIGEST_KEY)  # as in a table written before the digest existed
                kind += " (no digest)"
        _write(bad, df, meta)
        _outcome(bad, trace, total, tally, kind.split(" ")[0])

    prop()
    assert _report("LUT edits", tally, record_property) >= 400


def test_a_column_name_that_is_not_utf8_is_the_luts_error(case):
    """Found by test_damaged_bytes in a CI run: a byte flipped inside a column name of the
    Parquet footer made pyarrow raise UnicodeDecodeError, not the LUT's own error."""
    src, bad, trace, total = case
    raw = bytearray(src.read_bytes())
    i = raw.index(b"median_ms")  # its first occurrence: the name in the footer's schema
    raw[i] ^= 0x80 | 0x73  # 'm' (0x6d) -> 0xde: a lead byte without its continuation
    bad.write_bytes(bytes(raw))
    with pytest.raises(LutError, match="not a readable Parquet file|cannot read LUT rows"):
        Lut.load(bad)
