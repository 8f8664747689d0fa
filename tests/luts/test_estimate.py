import numpy as np
import pandas as pd
import pytest
import torch

from hwprune.luts import LatencyModel, Lut, LutError, LutMissError, build_variant, estimate
from hwprune.luts.lookup import DEFAULT_STAT, drift_factors
from hwprune.profiler import OpKey, read_lut, trace_model, write_lut
from hwprune.profiler.coupling import dimensions
from hwprune.profiler.keyspace import KEY_FIELDS
from hwprune.zoo import build_demo

META = {"device_kind": "cpu", "device_name": "Test CPU", "dtype": "fp32", "batch": 1,
        "memory_format": "contiguous", "timing_mode": "eager", "algos": "auto", "threads": 1,
        "sources": [{"model": "demo", "input_size": 32, "step": 32, "layers": []}]}


def _rows(keys_ms):
    stats = {"std_ms": 0.0, "reps": 5, "ci95_rel": 0.0, "converged": True, "algo": "x",
             "seconds": 0.0}
    return pd.DataFrame([{**k.as_dict(), "mean_ms": ms, "median_ms": ms, "min_ms": ms, **stats}
                         for k, ms in keys_ms])


def test_estimate_of_a_profiled_model_is_the_sum_of_its_rows(demo_lut):
    lut = Lut.load(demo_lut)
    net = build_demo()
    est = estimate(net, lut, 32, 1, strict=True)
    rows, meta = read_lut(demo_lut)
    # each row put on the table's speed by its drift reading (profiler.drift)
    factors = drift_factors(rows, meta)
    assert factors is not None and np.isfinite(factors).all()
    rows = rows.assign(ms=rows[DEFAULT_STAT] * factors)
    keys = pd.DataFrame([r.key.as_dict() for r in trace_model(net, 32, 1).layers])
    by_hand = keys.merge(rows, on=list(KEY_FIELDS), how="left")["ms"]
    assert not by_hand.isna().any()
    assert est.total_ms == pytest.approx(by_hand.sum(), rel=1e-12)
    assert est.interpolated == 0 and 0 < est.conv_ms < est.total_ms


def test_interpolation_stays_between_neighbours():
    conv = lambda ci, co: OpKey("conv2d", ci, co, 3, 3, 1, 1, 1, 1, in_h=8, in_w=8)  # noqa: E731
    bn = lambda c: OpKey("batch_norm2d", c, c, in_h=8, in_w=8)  # noqa: E731
    grid = {(16, 16): 1.0, (16, 32): 3.0, (32, 16): 2.0, (32, 32): 7.0}
    lut = Lut(_rows([(conv(*k), v) for k, v in grid.items()] + [(bn(16), 0.5), (bn(32), 0.9)]),
              META)
    ms, exact = lut.lookup([conv(16, 32), conv(24, 24), conv(20, 32), bn(24), bn(16)])
    assert exact.tolist() == [True, False, False, False, True]
    assert ms[0] == 3.0 and ms[4] == 0.5
    assert ms[1] == pytest.approx((1 + 3 + 2 + 7) / 4)  # bilinear at the centre
    assert 3.0 <= ms[2] <= 7.0 and 0.5 <= ms[3] <= 0.9
    rng = np.random.default_rng(0)
    q = [conv(int(a), int(b)) for a, b in rng.integers(16, 33, size=(50, 2))]
    vals, _ = lut.lookup(q)
    assert ((vals >= 1.0) & (vals <= 7.0)).all()
    with pytest.raises(LutMissError, match="outside the measured grid"):
        lut.lookup([conv(40, 16)])
    with pytest.raises(LutMissError, match="strict mode"):
        lut.lookup([conv(24, 24)], strict=True)
    with pytest.raises(LutMissError, match="never profiled"):
        lut.lookup([OpKey("conv2d", 16, 16, 1, 1, in_h=8, in_w=8)])


def test_delta_query_equals_the_difference_of_two_full_estimates(demo_lut):
    lut = Lut.load(demo_lut)
    net = build_demo()
    trace = trace_model(net, 32, 1)
    model = LatencyModel(trace, lut, strict=True)
    base = estimate(net, lut, 32, 1, strict=True).total_ms
    assert model.total_ms == pytest.approx(base)
    delta = model.delta_ms(32)
    dims = dimensions(trace.layers, trace.frozen_dims)
    assert len(dims) == len(delta) == 4
    for j, d in enumerate(dims):
        chans = tuple(c - 32 if i == j else c for i, c in enumerate(model.channels))
        smaller = build_variant(net, trace, dims, chans, torch.randn(1, 1, 32, 32))
        full = estimate(smaller, lut, 32, 1, strict=True).total_ms
        assert delta[j] == pytest.approx(full - base, abs=1e-12)
    # removing k from a dimension of k channels would empty a layer: not offered
    assert np.isnan(model.delta_ms(64)[0])
    after = model.remove(2, 32)
    assert after == pytest.approx(base + delta[2])


def test_lut_must_match_its_target(demo_lut):
    with pytest.raises(LutError, match="dtype 'fp32' in the LUT, 'fp16' in the target"):
        Lut.load(demo_lut, target={"dtype": "fp16"})
    with pytest.raises(LutError, match="batch"):
        Lut.load(demo_lut, target={"batch": 8, "device_kind": "cpu"})
    Lut.load(demo_lut, target={"dtype": "fp16"}, allow_mismatch=True)
    with pytest.raises(LutMissError, match="at 64x64.*never profiled"):
        estimate(build_demo(), Lut.load(demo_lut), 64, 1)  # fmap differs from the LUT's


def test_luts_of_other_conditions_are_not_mixed(demo_lut, tmp_path):
    df, meta = read_lut(demo_lut)
    other = write_lut(df, {**meta, "batch": 4}, tmp_path / "b4.parquet")
    with pytest.raises(LutError, match="batch 4"):
        Lut.load([demo_lut, other])


def test_a_macs_table_answers_the_delta_query_in_macs_without_calibration():
    # MacsTable stands in for a Lut in LatencyModel (the flops-aware criterion): the model
    # reads its calibration and metadata as it reads a Lut's, and MACs are never scaled.
    from hwprune.luts import macs
    from hwprune.pruner.cost import MacsTable

    net = build_demo()
    trace = trace_model(net, 32, 1)
    table = MacsTable()
    assert table.calibration is None and table.meta == {}
    model = LatencyModel(trace, table, strict=True)
    assert model.total_ms == pytest.approx(sum(macs(r.key) for r in trace.layers))
    delta = model.delta_ms(32)
    dims = dimensions(trace.layers, trace.frozen_dims)
    for j in range(len(dims)):
        chans = tuple(c - 32 if i == j else c for i, c in enumerate(model.channels))
        smaller = trace_model(build_variant(net, trace, dims, chans, torch.randn(1, 1, 32, 32)),
                              32, 1)
        assert delta[j] == pytest.approx(
            sum(macs(r.key) for r in smaller.layers) - model.total_ms)
