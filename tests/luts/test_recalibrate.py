import json
import shutil

import numpy as np
import pandas as pd
from click.testing import CliRunner

import importlib
from hwprune.cli import cli
from hwprune.luts import Lut
from hwprune.luts.recalibrate import PREFIX
from hwprune.luts.validate import interleave

validate_mod = importlib.import_module("hwprune.luts.validate")  # `luts.validate` is also the function
from hwprune.profiler import read_lut


def _run(*a):
    return CliRunner().invoke(cli, list(map(str, a)))


def test_interleave_spreads_the_second_set_evenly():
    order = list(interleave({i: i for i in range(10)}, {f"c{j}": j for j in range(3)}))
    assert order == [0, 1, "c0", 2, 3, 4, "c1", 5, 6, 7, "c2", 8, 9]
    assert list(interleave({}, {"a": 1, "b": 2})) == ["a", "b"]
    assert list(interleave({1: 1, 2: 2}, {})) == [1, 2]
    assert len(interleave({i: i for i in range(3)}, {f"c{j}": j for j in range(7)})) == 10


def test_validate_recalibrates_on_its_own_rounds_and_keeps_the_previous_fit(
        demo_lut, tmp_path, monkeypatch):
    lut = shutil.copy(demo_lut, tmp_path / "demo.parquet")
    res = _run("lut", "calibrate", "demo", "--lut", lut, "--samples", 4, "--max-reps", 5, "-q")
    assert res.exit_code == 0, res.output
    before = read_lut(lut)[1]["calibration"]
    calls = []
    real = validate_mod.measure_interleaved

    def spy(nets, *a, **k):
        calls.append(list(nets))
        return real(nets, *a, **k)

    monkeypatch.setattr(validate_mod, "measure_interleaved", spy)
    out = tmp_path / "val"
    res = _run("lut", "validate", "demo", "--lut", lut, "--samples", 8, "--rounds", 2,
               "--max-reps", 5, "--out", out, "-q", "--recalibrate")
    assert res.exit_code == 0, res.output
    assert "recalibrated on 4 variants measured in these same rounds" in res.output
    # One measurement (twice the rounds on a noisy machine): the calibration variants
    # among the validation's, not after them.
    assert len(calls) in (1, 2) and all(c == calls[0] for c in calls)
    cal_pos = [i for i, k in enumerate(calls[0]) if k.startswith(PREFIX)]
    assert len(cal_pos) == 4 and len(calls[0]) == 12
    assert cal_pos[0] > 0 and cal_pos[-1] < len(calls[0]) - 1
    after = read_lut(lut)[1]["calibration"]
    assert after["with_validation"] and after["rounds"] == 2 * len(calls)
    assert after["variants"] == before["variants"]  # same seed and depths: the same networks
    assert after["measured_raw_ms"] != before["measured_raw_ms"]
    report = json.loads((out / "report.json").read_text())
    prev = report["recalibration"]["previous"]
    assert prev["fitted"] == before["measured"] and prev["variants_shared"] == 4
    ratios = np.array(after["measured_raw_ms"]) / np.array(before["measured_raw_ms"])
    assert prev["variants_now_vs_then"] == np.median(ratios)
    assert np.isfinite(prev["mape"]) and np.isfinite(prev["r2_identity"])
    # Every row's estimate is the table's as stored now (the new fit, where applied).
    table = Lut.load(lut)
    rows = pd.read_csv(out / "variants.csv")
    fit = table.calibration
    expect = rows["operator_sum_ms"] if fit is None else \
        fit["slope"] * rows["operator_sum_ms"] + fit["per_op_ms"] * fit["n_ops"]
    assert np.allclose(rows["estimate_ms"], expect, rtol=1e-9)
    assert report["calibration"] is None or report["calibration"]["slope"] == fit["slope"]


def test_recalibrate_a_table_without_calibration_and_refuse_two_tables(demo_lut, tmp_path):
    lut = shutil.copy(demo_lut, tmp_path / "demo.parquet")
    assert "calibration" not in read_lut(lut)[1]
    from hwprune.luts import ValidateConfig, validate
    report = validate(ValidateConfig("demo", [str(lut)], tmp_path / "v", samples=6, rounds=1,
                                     max_reps=5, progress=False, recalibrate=True,
                                     calibration_samples=4))
    cal = read_lut(lut)[1]["calibration"]
    assert len(cal["variants"]) == 4 and cal["with_validation"]
    assert report["recalibration"] == {"variants": 4, "rounds": 1, "previous": None}
    other = shutil.copy(demo_lut, tmp_path / "other.parquet")
    res = _run("lut", "validate", "demo", "--lut", lut, "--lut", other, "--samples", 6,
               "--out", tmp_path / "v2", "--recalibrate", "-q")
    assert res.exit_code == 2 and "exactly one --lut" in res.output
    assert read_lut(lut)[1]["calibration"] == cal  # nothing written


def test_validation_measures_again_when_its_rounds_scatter(demo_lut, tmp_path, monkeypatch):
    """A slow stretch (here: every net's first round 1.5x) makes the rounds disagree by
    more than SPREAD_WARN: the variants are measured in as many rounds again."""
    calls = []
    real = validate_mod.measure_interleaved

    def burst(nets, *a, **k):
        samples, stds = real(nets, *a, **k)
        if not calls:
            for v in samples.values():
                for s in ("mean_ms", "median_ms", "min_ms"):
                    v[s][0] *= 1.5
        calls.append(list(nets))
        return samples, stds

    monkeypatch.setattr(validate_mod, "measure_interleaved", burst)
    out = tmp_path / "v"
    res = _run("lut", "validate", "demo", "--lut", demo_lut, "--samples", 5, "--rounds", 2,
               "--max-reps", 5, "--out", out, "-q")
    assert res.exit_code == 0, res.output
    assert len(calls) == 2 and calls[0] == calls[1]
    assert "measured again" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["remeasured_after_spread"] > 0.10
    rows = pd.read_csv(out / "variants.csv")
    assert (rows["rounds"] == 4).all()
