"""Tables timed in a deployment runtime: profile, metadata, refusals, calibration and
validation end to end on the demo net (small, so each runtime takes seconds)."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from hwprune.cli import cli
from tests.conftest import only_when_asked

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")


def _run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def _runtime_lut(tmp_path_factory, runtime):
    from tests.conftest import shared_file

    def make(path):
        # ONNX Runtime's table times every key cold and hot (the blend is tested on it);
        # OpenVINO's hot only, which halves its cost.
        res = _run("profile", "demo", "--step", "32", "--runtime", runtime, "--out", path,
                   "--max-reps", "20", "--calibrate", "3", "-q",
                   *(["--weight-cache", "hot"] if runtime == "openvino" else []))
        assert res.exit_code == 0, res.output
        assert "calibrated on 3 pruned variants" in res.output, res.output
        return path

    return shared_file(tmp_path_factory, f"demo-{runtime}.parquet", make)


@pytest.fixture(scope="module", params=["onnxruntime", pytest.param("openvino",
                                                                   marks=pytest.mark.slow)])
def runtime_lut(request, tmp_path_factory):
    if request.param == "openvino":
        # The same code paths as ONNX Runtime's (each OpenVINO operator and whole-network
        # timing have their own fast tests in tests/profiler); about 45 s more of make test.
        only_when_asked(request, 45)
    return request.param, _runtime_lut(tmp_path_factory, request.param)


def test_a_runtime_table_holds_fused_chains_and_says_where_it_was_timed(runtime_lut):
    from hwprune.luts import Lut

    runtime, path = runtime_lut
    lut = Lut.load(path)
    assert lut.runtime == runtime
    rt = lut.meta["runtime"]
    assert rt["threads"] == lut.meta["threads"] == 1 and rt["version"] and rt["provider"]
    ops = set(lut.rows["op"])
    assert any(op.startswith("conv2d+bn") for op in ops)
    assert "batch_norm2d" not in ops  # folded into the convs before them
    assert (lut.rows["algo"] == runtime).all()
    cal = lut.meta["calibration"]
    assert cal["runtime"] == runtime and len(cal["variants"]) == 3
    # the machine-speed gauge is read in the runtime, beside every row and every variant
    assert lut.meta["drift"]["runtime"] == lut.drift_runtime == runtime
    assert lut.drift_key.op.startswith("conv2d+") and lut.rows["ref_ms"].gt(0).all()
    assert cal["drift_corrected"] and lut.drift_level_ms == lut.rows["ref_ms"].min()
    info = _run("lut", "info", path)
    assert info.exit_code == 0 and f"runtime  {runtime}" in info.output, info.output


def test_validation_measures_in_the_tables_runtime(runtime_lut, tmp_path):
    runtime, path = runtime_lut
    out = tmp_path / "val"
    res = _run("lut", "validate", "demo", "--lut", path, "--samples", "4", "--rounds", "1",
               "--max-reps", "10", "--out", out, "-q")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["runtime"]["runtime"] == report["lut_runtime"] == runtime
    rows = pd.read_csv(out / "variants.csv")
    assert (rows["measured_in"] == runtime).all() and (rows["measured_ms"] > 0).all()
    assert (rows["ref_ms"] > 0).all() and report["machine_drift"]["source"] == "drift reference"
    assert (rows["estimate_ms"] > 0).all()


@pytest.mark.slow
def test_validation_recalibrates_in_the_tables_runtime(runtime_lut, tmp_path, request):
    # Recalibration's own logic is tested in torch (tests/luts/test_recalibrate.py) and
    # measuring in the runtime just above; this joins the two at 11 s of `make test`.
    only_when_asked(request, 11)
    import shutil

    from hwprune.profiler import read_lut

    runtime, shared = runtime_lut
    path = shutil.copy(shared, tmp_path / "t.parquet")  # the shared table stays as it is
    before = read_lut(path)[1]["calibration"]
    out = tmp_path / "val"
    res = _run("lut", "validate", "demo", "--lut", path, "--samples", "4", "--rounds", "1",
               "--max-reps", "10", "--out", out, "-q", "--recalibrate")
    assert res.exit_code == 0, res.output
    after = read_lut(path)[1]["calibration"]
    assert after["runtime"] == runtime and after["with_validation"]
    assert after["variants"] == before["variants"] and after["drift_corrected"]
    report = json.loads((out / "report.json").read_text())
    assert report["recalibration"]["previous"]["variants_shared"] == 3
    assert (pd.read_csv(out / "variants.csv")["measured_in"] == runtime).all()


def test_a_runtime_table_is_refused_elsewhere(runtime_lut, demo_lut, tmp_path):
    from hwprune.luts import Lut, merge_luts
    from hwprune.profiler.table import LutError

    runtime, path = runtime_lut
    other = "openvino" if runtime == "onnxruntime" else "onnxruntime"
    res = _run("lut", "validate", "demo", "--lut", path, "--samples", "3", "--rounds", "1",
               "--out", tmp_path / "v", "--runtime", other, "-q")
    assert res.exit_code == 2 and f"was timed in {runtime}, not {other}" in res.output
    assert not (tmp_path / "v").exists()
    with pytest.raises(LutError, match="runtime"):  # rows of two runtimes never mix
        merge_luts([demo_lut, path], tmp_path / "mixed.parquet")
    assert not (tmp_path / "mixed.parquet").exists()
    # growing it with a torch run is refused too, and leaves it as it was
    before = Lut.load(path).rows
    grow = _run("profile", "demo", "--step", "16", "--out", path, "-q")
    assert grow.exit_code == 2 and "runtime" in grow.output
    assert Lut.load(path).rows.equals(before)


def test_small_networks_are_estimated_on_hot_timings_big_ones_on_cold(runtime_lut):
    """Pruning takes a network from weights that stream from memory to weights that stay in
    a core's cache: the table holds both timings and blends them by the network's size."""
    import numpy as np

    from hwprune.luts import Lut
    from hwprune.luts.estimate import estimate
    from hwprune.zoo import resolve_model

    runtime, path = runtime_lut
    lut = Lut.load(path)
    if runtime == "openvino":  # timed with --weight-cache hot: no blend
        assert not lut.meta.get("cache_blend") and lut.cold_share(0) == 1.0
        return
    blend = lut.meta["cache_blend"]
    lo, hi = blend["hot_below_bytes"], blend["cold_above_bytes"]
    assert 0 <= lo < hi
    rows = lut.rows
    assert rows["hot_median_ms"].notna().all()
    from hwprune.profiler.table import key_of_row

    key = [key_of_row(r) for r in rows.head(3).to_dict("records")]
    hot, _ = lut.lookup(key, weight_bytes=0)
    cold, _ = lut.lookup(key, weight_bytes=10 * hi)
    assert lut.cold_share(0) == 0.0 and lut.cold_share(10 * hi) == 1.0
    assert np.allclose(hot, rows.head(3)["hot_median_ms"] * _factors(lut)[:3])
    assert np.allclose(cold, rows.head(3)["median_ms"] * _factors(lut)[:3])
    mid, _ = lut.lookup(key, weight_bytes=(lo + hi) / 2)
    assert np.allclose(mid, (hot + cold) / 2)
    e = estimate(resolve_model("demo").module, lut, 32, 1)
    assert 0.0 <= e.cold_share <= 1.0


def _factors(lut):
    import numpy as np

    from hwprune.luts.lookup import drift_factors

    f = drift_factors(lut.rows, lut.meta)
    return np.ones(len(lut.rows)) if f is None else f
