import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hwprune.profiler.keyspace import KEY_FIELDS, OpKey
from hwprune.profiler.table import (COLUMNS, META_KEY, LutError, calibrations_dropped, merge_luts,
                            read_lut, read_meta, write_lut)

META = {"device_kind": "cpu", "device_name": "Test CPU", "dtype": "fp32", "batch": 1,
        "memory_format": "contiguous", "timing_mode": "eager", "algos": "auto", "threads": 2,
        "torch": "x", "host": "h", "created": "2026-01-01T00:00:00+00:00",
        "sources": [{"model": "demo", "input_size": 32, "step": 16, "layers": []}],
        "configs": []}


def _row(c_in, c_out, mean=1.0):
    stats = {"mean_ms": mean, "median_ms": mean, "min_ms": mean, "std_ms": 0.0, "reps": 10,
             "ci95_rel": 0.0, "converged": True, "algo": "onednn", "seconds": 0.1}
    return {**OpKey("conv2d", c_in, c_out, 3, 3, in_h=8, in_w=8).as_dict(), **stats}


def test_metadata_and_rows_round_trip(tmp_path):
    path = write_lut([_row(8, 8, 1.5), _row(8, 16, 2.5)], META, tmp_path / "a.parquet")
    df, meta = read_lut(path)
    assert meta == {**META, "schema_version": 1, "written_by": meta["written_by"],
                    "rows_sha256": meta["rows_sha256"]}
    assert list(df.columns) == list(COLUMNS) and len(df) == 2
    plain = pd.read_parquet(path)  # no help from hwprune needed
    assert plain["mean_ms"].tolist() == [1.5, 2.5]
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away


def test_corrupt_truncated_and_foreign_files_are_named(tmp_path):
    good = write_lut([_row(8, 8)], META, tmp_path / "good.parquet")
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(LutError, match="trunc.parquet: not a readable Parquet"):
        read_lut(trunc)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1]}), plain)
    with pytest.raises(LutError, match="without hwprune metadata"):
        read_meta(plain)
    with pytest.raises(LutError, match="no such LUT"):
        read_meta(tmp_path / "missing.parquet")


def test_unknown_schema_version_and_missing_columns(tmp_path):
    table = pq.read_table(write_lut([_row(8, 8)], META, tmp_path / "a.parquet"))
    meta = json.loads(table.schema.metadata[META_KEY])
    future = table.replace_schema_metadata({META_KEY: json.dumps({**meta, "schema_version": 99})})
    pq.write_table(future, tmp_path / "future.parquet")
    with pytest.raises(LutError, match="schema version 99"):
        read_meta(tmp_path / "future.parquet")
    pq.write_table(table.drop(["mean_ms"]), tmp_path / "cols.parquet")
    with pytest.raises(LutError, match="lacks columns mean_ms"):
        read_meta(tmp_path / "cols.parquet")


@pytest.mark.parametrize("field,value", [("dtype", "fp16"), ("batch", 8),
                                         ("device_name", "Other CPU")])
def test_merge_refuses_mixed_conditions(tmp_path, field, value):
    a = write_lut([_row(8, 8)], META, tmp_path / "a.parquet")
    b = write_lut([_row(8, 16)], {**META, field: value}, tmp_path / "b.parquet")
    with pytest.raises(LutError, match=f"{field} "):
        merge_luts([a, b], tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def test_merge_joins_and_deduplicates(tmp_path):
    a = write_lut([_row(8, 8, 1.0), _row(8, 16, 2.0)], META, tmp_path / "a.parquet")
    other_src = {**META, "sources": [{"model": "resnet18", "input_size": 224, "step": 64,
                                      "layers": []}]}
    b = write_lut([_row(8, 16, 9.0), _row(16, 16, 3.0)], other_src, tmp_path / "b.parquet")
    df, meta = read_lut(merge_luts([a, b], tmp_path / "m.parquet"))
    assert len(df) == 3
    assert df.set_index(["c_in", "c_out"])["mean_ms"].to_dict() == {
        (8, 8): 1.0, (8, 16): 2.0, (16, 16): 3.0}  # first file wins a duplicate key
    assert [s["model"] for s in meta["sources"]] == ["demo", "resnet18"]
    assert len(df.drop_duplicates(subset=list(KEY_FIELDS))) == 3


CAL = {"model": "demo", "variants": ["16 16"],
       "fits": {"mean_ms": {"slope": 1.2, "per_op_ms": 0.001}}}


def test_a_merge_drops_the_calibration_and_one_file_keeps_its_own(tmp_path):
    # A calibration is a fit to one table's operator sums; after a join it describes
    # rows the merged table no longer is, whichever file came first.
    a = write_lut([_row(8, 8)], {**META, "calibration": CAL}, tmp_path / "a.parquet")
    b = write_lut([_row(8, 16)], META, tmp_path / "b.parquet")
    for paths in ([a, b], [b, a], [a, a]):
        assert "calibration" not in read_lut(merge_luts(paths, tmp_path / "m.parquet"))[1]
    assert calibrations_dropped([a, b]) == [(a, "demo")]
    assert calibrations_dropped([b, b]) == []
    assert calibrations_dropped([a]) == []
    assert read_lut(merge_luts([a], tmp_path / "one.parquet"))[1]["calibration"] == CAL
