"""The drift reference: chosen from the model alone, read through a scan, stored per row,
and used by ``luts`` to put every row (and calibration/validation measurements) on one
machine speed."""

import numpy as np
import pandas as pd
import pytest

from hwprune.luts import Lut, estimate
from hwprune.luts.lookup import DEFAULT_STAT, drift_factors
from hwprune.luts.variants import on_table_speed
from hwprune.profiler import ProfileConfig, TimingConfig, profile_model, read_lut, trace_model, write_lut
from hwprune.profiler.drift import (REF_MAX_ELEMENTS, REF_MAX_MACS, DriftReference, choose_reference,
                            reference_config, working_set)
from hwprune.profiler.fusion import runtime_trace
from hwprune.profiler.keyspace import macs
from hwprune.profiler.table import merge_luts
from hwprune.zoo import build_demo, resolve_model


@pytest.mark.parametrize("name,size", [("demo", 32), ("mobilenet_v2", 112)])
def test_the_reference_is_the_largest_compute_bound_conv_within_the_budget(name, size):
    trace = trace_model(resolve_model(name).module, size, 1 if name == "demo" else 3)
    key = choose_reference(trace)
    convs = {r.key for r in trace.layers if r.key.op == "conv2d"}
    small = {k for k in convs if macs(k) <= REF_MAX_MACS and working_set(k) <= REF_MAX_ELEMENTS}
    assert small, "both models have convs that fit a core's cache"
    assert key in small and all(macs(k) <= macs(key) for k in small)
    # mobilenet_v2's largest conv within the MACs (its 1.6 MB last 1x1) is not the gauge
    assert any(macs(k) > macs(key) for k in convs if macs(k) <= REF_MAX_MACS)
    again = trace_model(resolve_model(name).module, size, 1 if name == "demo" else 3)
    assert choose_reference(again) == key  # shards and resumes agree


def test_a_runtime_reference_is_a_fused_chain_read_in_the_runtime():
    pytest.importorskip("onnxruntime")
    trace = runtime_trace(trace_model(build_demo(), 32, 1), "onnxruntime")
    key = choose_reference(trace)
    assert key.op.startswith("conv2d+")  # the chain the runtime runs, BN folded in
    with DriftReference(key, reference_config(TimingConfig(threads=1)),
                        runtime="onnxruntime") as ref:
        readings = [ref.read() for _ in range(2)]
        assert all(0 < r < 50 for r in readings) and len(ref.readings) == 4  # 3 first, then 1
        assert ref.summary()["runtime"] == "onnxruntime"
    assert ref._session is None  # closed with the block


def test_a_scan_stores_a_reading_beside_every_row(demo_lut):
    rows, meta = read_lut(demo_lut)
    d = meta["drift"]
    assert d["readings"] >= 2 and d["min_ms"] <= d["median_ms"] <= d["max_ms"]
    assert rows["ref_ms"].notna().all() and (rows["ref_ms"] > 0).all()
    assert Lut.load(demo_lut).drift_level_ms == pytest.approx(float(rows["ref_ms"].min()))


def _slowed(rows: pd.DataFrame, half: np.ndarray, factor: float) -> pd.DataFrame:
    """Rows as a machine running ``factor`` times slower for ``half`` would have stored them."""
    out = rows.copy()
    for col in ("mean_ms", "median_ms", "min_ms", "ref_ms"):
        out.loc[half, col] = out.loc[half, col] * factor
    return out


def test_rows_timed_while_the_machine_ran_slow_are_put_back_on_its_usual_speed(demo_lut,
                                                                               tmp_path):
    rows, meta = read_lut(demo_lut)
    rows["ref_ms"] = 0.4  # a steady machine: every row at the same speed
    write_lut(rows, meta, tmp_path / "steady.parquet")
    half = np.arange(len(rows)) % 2 == 0
    write_lut(_slowed(rows, half, 1.3), meta, tmp_path / "drifted.parquet")
    net = build_demo()
    steady = estimate(net, Lut.load(tmp_path / "steady.parquet"), 32, 1).total_ms
    drifted = Lut.load(tmp_path / "drifted.parquet")
    # every row ends on one speed: the fastest reading's
    level = drifted.drift_level_ms
    assert level == pytest.approx(0.4)
    assert estimate(net, drifted, 32, 1).total_ms == pytest.approx(steady * level / 0.4,
                                                                  rel=1e-9)
    # without the reference the same rows would have been summed as measured
    plain = _slowed(rows, half, 1.3)
    write_lut(plain, {k: v for k, v in meta.items() if k != "drift"}, tmp_path / "plain.parquet")
    assert Lut.load(tmp_path / "plain.parquet").drift_level_ms is None
    as_measured = estimate(net, Lut.load(tmp_path / "plain.parquet"), 32, 1).total_ms
    assert as_measured != pytest.approx(steady, rel=1e-3)


def test_joining_tables_of_different_references_uses_rows_as_measured(demo_lut, tmp_path):
    rows, meta = read_lut(demo_lut)
    a, b = rows.iloc[::2], rows.iloc[1::2]
    other = {**meta, "drift": {**meta["drift"], "key": {**meta["drift"]["key"], "c_out": 7}}}
    write_lut(a, meta, tmp_path / "a.parquet")
    write_lut(b, other, tmp_path / "b.parquet")
    merged = read_lut(merge_luts([tmp_path / "a.parquet", tmp_path / "b.parquet"],
                                 tmp_path / "m.parquet"))
    assert "drift" not in merged[1]
    assert drift_factors(*merged) is None
    write_lut(b, meta, tmp_path / "b2.parquet")  # the same reference: kept
    same = read_lut(merge_luts([tmp_path / "a.parquet", tmp_path / "b2.parquet"],
                               tmp_path / "m2.parquet"))
    assert same[1]["drift"]["key"] == meta["drift"]["key"] and drift_factors(*same) is not None


def test_a_table_of_an_older_hwprune_without_readings_still_loads(demo_lut, tmp_path):
    import pyarrow.parquet as pq

    table = pq.read_table(demo_lut)
    pq.write_table(table.drop(["ref_ms"]), tmp_path / "old.parquet")
    rows, meta = read_lut(tmp_path / "old.parquet")
    assert rows["ref_ms"].isna().all() and Lut.load(tmp_path / "old.parquet").drift_level_ms is None
    assert estimate(build_demo(), Lut.load(tmp_path / "old.parquet"), 32, 1).total_ms > 0


def test_measurements_are_put_on_the_table_speed_by_the_reading_beside_them():
    samples = {DEFAULT_STAT: [2.0, 2.6], "ref_ms": [0.4, 0.52]}  # the second round 30% slow
    assert on_table_speed(samples, DEFAULT_STAT, 0.4) == pytest.approx([2.0, 2.0])
    assert on_table_speed(samples, DEFAULT_STAT, None) == [2.0, 2.6]
    assert on_table_speed({DEFAULT_STAT: [2.0], "ref_ms": [float("nan")]}, DEFAULT_STAT,
                          0.4) == [2.0]


def test_a_resumed_scan_keeps_its_reference(tmp_path):
    out = tmp_path / "t.parquet"
    tc = dict(max_reps=3, warmup=1, threads=1)
    profile_model(ProfileConfig("demo", out, step=64, max_keys=5, progress=False,
                                timing=TimingConfig(**tc)))
    r = profile_model(ProfileConfig("demo", out, step=64, progress=False,
                                    timing=TimingConfig(**tc)))
    rows, meta = read_lut(out)
    assert r.keys_left == 0 and rows["ref_ms"].notna().all()
    assert meta["drift"]["key"] == choose_reference(trace_model(build_demo(), 32, 1)).as_dict()
    assert set(r.stages) >= {"setup", "pilot", "reference", "scan", "finalize"}


class _Scripted(DriftReference):
    """The real smoothing over a known sequence of raw readings (ms)."""

    def __init__(self, raw: list[float]) -> None:
        super().__init__(choose_reference(trace_model(build_demo(), 32, 1)),
                         TimingConfig(threads=1), every_s=0.0)
        self.raw = iter(raw)

    def _measure(self) -> float:
        return next(self.raw)


def test_one_burst_in_a_reading_does_not_move_the_reading_in_force():
    # steady at 0.40 ms, one raw reading caught in a burst (0.55), then a real slow-down
    ref = _Scripted([0.40, 0.41, 0.40, 0.40, 0.55, 0.40, 0.52, 0.52, 0.53, 0.52])
    first = ref.read()  # the first reading in force is the median of three taken at once
    assert len(ref.readings) == 3 and first == pytest.approx(0.40)
    in_force = [ref.current() for _ in range(7)]
    assert in_force[1] == pytest.approx(0.40)          # the burst: not followed
    assert in_force[-1] == pytest.approx(0.52)         # the sustained slow-down: followed
    s = ref.summary()
    assert s["raw_max_ms"] == pytest.approx(0.55) and s["max_ms"] == pytest.approx(0.52)
    assert s["smooth"] == 5 and s["readings"] == 10
