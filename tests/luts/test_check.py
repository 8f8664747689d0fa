"""The rules every LUT read applies (profiler.check) and `hwprune lut check`."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from hwprune.cli import cli
from hwprune.luts import Lut, LutError, estimate, merge_luts
from hwprune.profiler.check import DIGEST_KEY, LutCheckError, digest
from hwprune.profiler.table import read_lut, write_lut
from hwprune.zoo import resolve_model


def _run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def _error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for f in fragments:
        assert f in lines[0], lines[0]


def hand_edit(src, out, df=None, meta_edit=None, keep_digest=True):
    """Rewrite ``src`` as a user would with pandas/pyarrow, keeping its schema metadata
    (and so its digest) unless told otherwise."""
    table = pq.read_table(src)
    md = dict(table.schema.metadata)
    if meta_edit is not None:
        meta = json.loads(md[b"hwprune"])
        meta_edit(meta)
        md[b"hwprune"] = json.dumps(meta).encode()
        if not keep_digest:
            md[DIGEST_KEY] = digest(md[b"hwprune"])
    rows = table.to_pandas() if df is None else df
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(md),
                   out)
    return out


@pytest.fixture(scope="module")
def demo_total(demo_lut):
    return estimate(resolve_model("demo").module, Lut.load(demo_lut), 32, 1).total_ms


def test_the_issues_hand_edits_are_refused_by_every_command(demo_lut, tmp_path):
    df, _ = read_lut(demo_lut)
    cases = {
        "negative.parquet": (df.assign(mean_ms=-1.0), None, "latency: mean_ms -1.0"),
        "nan.parquet": (df.assign(median_ms=np.nan), None, "latency: median_ms nan"),
        "dup.parquet": (pd.concat([df, df.assign(min_ms=df.min_ms * 3, mean_ms=df.mean_ms * 3,
                                                 median_ms=df.median_ms * 3)]), None,
                        "duplicates: key "),
        "noversion.parquet": (None, lambda m: m.pop("schema_version"), "schema: no "
                              "schema_version"),
    }
    for name, (rows, edit, fragment) in cases.items():
        path = hand_edit(demo_lut, tmp_path / name, rows, edit, keep_digest=False)
        _error(_run("lut", "estimate", "demo", "--lut", path), name, fragment)
        _error(_run("lut", "info", path), name, fragment)
        _error(_run("lut", "merge", path, demo_lut, "--out", tmp_path / "m.parquet"), fragment)
        _error(_run("lut", "calibrate", "demo", "--lut", path, "--samples", "3"), fragment)
        with pytest.raises(LutCheckError, match=fragment.split(":")[0]):
            Lut.load(path)


def test_a_newer_schema_names_the_hwprune_that_reads_it(demo_lut, tmp_path):
    def newer(m):
        m.update(schema_version=2, written_by="hwprune 0.9.0")

    path = hand_edit(demo_lut, tmp_path / "v2.parquet", meta_edit=newer, keep_digest=False)
    with pytest.raises(LutCheckError, match="version 2, written by hwprune 0.9.0, which reads "
                                            "it; this hwprune .* reads version 1"):
        Lut.load(path)


@pytest.mark.parametrize("field,value,fragment", [
    ("dtype", "fp64", "dtype 'fp64'"),
    ("batch", 0, "batch 0"),
    ("threads", None, "threads None"),
    ("memory_format", None, "memory_format None"),
    ("timing_mode", "graph", "timing_mode 'graph'"),
    ("device_kind", "tpu", "device_kind 'tpu'"),
    ("calibration", {"fits": {"median_ms": {"slope": float("nan"), "per_op_ms": 0.0}}},
     "calibration.fits.median_ms.slope nan"),
    ("drift", {"key": {"op": "conv2d", "channels": 3}}, "drift.key"),
    ("runtime", {"runtime": "tensorflow"}, "runtime {'runtime': 'tensorflow'}"),
    ("runtime", {"runtime": "onnxruntime", "version": "1.32.0", "provider": "CPU",
                 "optimization": "ORT_ENABLE_ALL", "threads": 4}, "runtime.threads 4"),
    ("runtime", {"runtime": "openvino", "version": "", "provider": "CPU",
                 "optimization": "LATENCY", "threads": 1}, "runtime.version ''"),
    ("cache_blend", {"hot_below_bytes": 2 ** 25, "cold_above_bytes": 2 ** 20},
     "cache_blend"),
])
def test_metadata_an_estimate_depends_on_is_checked(demo_lut, tmp_path, field, value, fragment):
    df, meta = read_lut(demo_lut)
    path = write_lut(df, {**meta, field: value}, tmp_path / "m.parquet")
    with pytest.raises(LutCheckError, match="metadata") as err:
        Lut.load(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_fused_chains_and_hot_timings_belong_to_runtime_tables(demo_lut, tmp_path):
    df, meta = read_lut(demo_lut)
    fused = df.assign(op=df["op"].where(df["op"] != "conv2d", "conv2d+bn+relu"))
    path = write_lut(fused, meta, tmp_path / "f.parquet")
    with pytest.raises(LutCheckError, match="fused chain conv2d\\+bn\\+relu .* timed in torch"):
        Lut.load(path)
    rt = {"runtime": "onnxruntime", "version": "1.32.0", "provider": "CPUExecutionProvider",
          "optimization": "ORT_ENABLE_ALL", "threads": meta["threads"]}
    # a runtime table's gauge is read in its runtime (or, before 2026-11-29, in torch)
    other = {**meta["drift"], "runtime": "openvino"}
    with pytest.raises(LutCheckError, match="drift.runtime 'openvino' .*'onnxruntime'"):
        Lut.load(write_lut(fused, {**meta, "runtime": rt, "drift": other}, tmp_path / "g.parquet"))
    Lut.load(write_lut(fused, {**meta, "runtime": rt}, tmp_path / "torch-gauge.parquet"))
    meta["drift"] = {**meta["drift"], "runtime": "onnxruntime"}
    Lut.load(write_lut(fused, {**meta, "runtime": rt}, tmp_path / "ok.parquet"))
    blend = {"hot_below_bytes": 2 ** 20, "cold_above_bytes": 2 ** 24}
    no_hot = write_lut(fused, {**meta, "runtime": rt, "cache_blend": blend},
                       tmp_path / "h.parquet")
    with pytest.raises(LutCheckError, match="hot_mean_ms nan is not a latency"):
        Lut.load(no_hot)


def test_metadata_changed_after_writing_fails_its_digest(demo_lut, tmp_path):
    path = hand_edit(demo_lut, tmp_path / "d.parquet", meta_edit=lambda m: m.pop("drift"))
    with pytest.raises(LutCheckError, match="no longer matches the digest"):
        Lut.load(path)


def test_keys_and_types(demo_lut, tmp_path):
    df, _ = read_lut(demo_lut)
    path = hand_edit(demo_lut, tmp_path / "k.parquet", df.assign(c_in=df.c_in.where(
        df.index != 3, -64)))
    with pytest.raises(LutCheckError, match="keys: c_in -64 < 1"):
        Lut.load(path)
    path = hand_edit(demo_lut, tmp_path / "t.parquet", df.assign(mean_ms=df.mean_ms.astype(str)))
    with pytest.raises(LutCheckError, match="schema: column mean_ms is (large_)?string"):
        Lut.load(path)
    path = hand_edit(demo_lut, tmp_path / "r.parquet", df.assign(ref_ms=0.0))
    with pytest.raises(LutCheckError, match="ref_ms"):
        Lut.load(path)


def test_exact_duplicates_are_tolerated_and_merges_record_their_rule(demo_lut, demo_total,
                                                                     tmp_path):
    df, meta = read_lut(demo_lut)
    twice = write_lut(pd.concat([df, df.iloc[:5]]), meta, tmp_path / "twice.parquet")
    assert estimate(resolve_model("demo").module, Lut.load(twice), 32, 1).total_ms == demo_total
    # the same rows added by hand to a table that records its rows' digest: refused
    by_hand = hand_edit(demo_lut, tmp_path / "by_hand.parquet", pd.concat([df, df.iloc[:5]]))
    with pytest.raises(LutError, match="rows: the rows no longer match"):
        Lut.load(by_hand)
    slower = write_lut(df.assign(**{c: df[c] * 2 for c in ("mean_ms", "median_ms", "min_ms",
                                                            "ref_ms")}), meta,
                       tmp_path / "slower.parquet")
    merged = Lut.load(merge_luts([demo_lut, slower], tmp_path / "merged.parquet"))
    assert merged.meta["duplicate_keys"]["rule"] == "the file listed first wins"
    assert merged.meta["duplicate_keys"]["rows_dropped"] == len(df)
    assert estimate(resolve_model("demo").module, merged, 32, 1).total_ms == demo_total


def test_check_command(demo_lut, tmp_path):
    ok = _run("lut", "check", demo_lut, "--model", "demo")
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.output and "operators answered" in ok.output and "pruning grid at step 32"\
        in ok.output
    df, _ = read_lut(demo_lut)
    bad = hand_edit(demo_lut, tmp_path / "bad.parquet", df.assign(min_ms=float("inf")))
    both = _run("lut", "check", demo_lut, bad)
    assert both.exit_code == 2
    lines = both.output.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"error: {bad}: latency: min_ms inf")
    elsewhere = _run("lut", "check", demo_lut, "--model", "demo", "--input-size", "40")
    # refused before any lookup, naming the table's size and the one asked for
    assert elsewhere.exit_code == 2 and "demo at 32 px, not at the 40 px" in elsewhere.output
    assert "exit status 0 when every file passes" in _run("lut", "check", "--help").output


def test_a_damaged_table_is_not_extended_by_profiling(demo_lut, tmp_path):
    from hwprune.profiler import ProfileConfig, TimingConfig, profile_model

    df, _ = read_lut(demo_lut)
    bad = hand_edit(demo_lut, tmp_path / "bad.parquet", df.assign(mean_ms=0.0))
    with pytest.raises(LutError, match="latency: mean_ms 0.0"):
        profile_model(ProfileConfig("demo", bad, step=32, progress=False,
                                    timing=TimingConfig(max_reps=3, warmup=1, threads=1)))
