import json

import pandas as pd
from click.testing import CliRunner

from hwprune.cli import cli


def _run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def _error(result, *fragments):
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("error: ")
    for f in fragments:
        assert f in line[0], line[0]


def test_validate_end_to_end_on_the_demo(demo_lut, tmp_path):
    out = tmp_path / "val"
    res = _run("lut", "validate", "demo", "--lut", demo_lut, "--samples", "5", "--rounds", "1",
               "--max-reps", "5", "--out", out, "-q")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    for key in ("r2_identity", "r2_linear", "mape", "max_abs_err_ms", "spearman", "n_samples"):
        assert key in report and key in report["proxies"]["flops"] \
            and key in report["proxies"]["params"] and key in report["conv_only"]
    assert report["n_samples"] == 5
    variants = pd.read_csv(out / "variants.csv")
    assert len(variants) == 5 and (variants["measured_ms"] > 0).all()
    assert variants["kind"].iloc[0] == "original"
    assert (variants["estimate_ms"] > variants["conv_only_ms"]).all()
    assert (out / "estimate_vs_measured.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "all operators" in res.output and "FLOPs (fitted)" in res.output
    # a rerun reuses the measured variants instead of measuring them again
    again = _run("lut", "validate", "demo", "--lut", demo_lut, "--samples", "5", "--rounds", "1",
                 "--max-reps", "5", "--out", out, "-q")
    assert again.exit_code == 0
    assert pd.read_csv(out / "variants.csv")["measured_ms"].tolist() == \
        variants["measured_ms"].tolist()
    assert "reused 5 of the 5 variants' measurements" in again.output, again.output
    assert json.loads((out / "report.json").read_text())["reused"]["rows"] == 5


def test_validate_reuses_only_what_was_measured_the_same_way(demo_lut, tmp_path):
    """A table made at another thread count, validated into the same directory, measures
    its variants again (the same variants at two threads are another measurement); --fresh
    measures again whatever matches."""
    from hwprune.profiler import ProfileConfig, TimingConfig, profile_model

    two = tmp_path / "demo-t2.parquet"
    profile_model(ProfileConfig("demo", two, step=32, progress=False,
                                timing=TimingConfig(max_reps=5, warmup=1, threads=2)))
    out = tmp_path / "val"
    args = ["--samples", "3", "--rounds", "1", "--max-reps", "5", "--out", out, "-q"]
    first = _run("lut", "validate", "demo", "--lut", demo_lut, *args)
    assert first.exit_code == 0 and "reused" not in first.output, first.output
    at_one = pd.read_csv(out / "variants.csv")
    other = _run("lut", "validate", "demo", "--lut", two, *args)
    assert other.exit_code == 0 and "reused" not in other.output, other.output
    at_two = pd.read_csv(out / "variants.csv")
    assert at_two["channels"].tolist() == at_one["channels"].tolist()
    assert all('"threads": 2' in s for s in at_two["setting"])
    assert (at_two["measured_at"] >= at_one["measured_at"].max()).all()
    fresh = _run("lut", "validate", "demo", "--lut", two, *args, "--fresh")
    assert fresh.exit_code == 0 and "reused" not in fresh.output, fresh.output
    assert json.loads((out / "report.json").read_text())["reused"] is None


def test_estimate_and_plot_commands(demo_lut, tmp_path):
    res = _run("lut", "estimate", "demo", "--lut", demo_lut)
    assert res.exit_code == 0 and "block2.conv2.0" in res.output and "convs only" in res.output
    png = tmp_path / "h.png"
    res = _run("lut", "plot", demo_lut, "--layer", "block2.conv2.0", "--out", png)
    assert res.exit_code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_name_the_file_and_the_problem(demo_lut, tmp_path):
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(demo_lut.read_bytes()[:200])
    _error(_run("lut", "estimate", "demo", "--lut", trunc), "trunc.parquet")
    _error(_run("lut", "estimate", "demo", "--lut", demo_lut, "--batch", "8"),
           "batch 1 in the LUT, 8 in the target")
    _error(_run("lut", "estimate", "demo", "--lut", demo_lut, "--device", "cuda"), "device_kind")
    _error(_run("lut", "estimate", "demo", "--lut", demo_lut, "--input-size", "40"),
           "profiled for demo at 32 px, not at the 40 px asked for")
    _error(_run("lut", "estimate", "resnet18", "--lut", demo_lut, "--input-size", "32"),
           "conv1", "never profiled")
    _error(_run("lut", "plot", demo_lut, "--layer", "nope"), "no layer 'nope'")


def test_profile_for_validation_covers_exactly_the_variants_keys(tmp_path):
    """A table of just the validation variants' keys: validate finds every key exactly
    (strict mode, no interpolation), and the table lacks the rest of the grid."""
    import pytest

    from hwprune.luts import Lut, LutMissError, variant_keys
    from hwprune.profiler.keyspace import scan_keys, trace_model
    from hwprune.zoo import resolve_model

    lut = tmp_path / "sparse.parquet"
    # Step 16: 73 of the grid's 200 keys (step 8: 85 of 688, the growing run then timed the
    # other 603)
    res = _run("profile", "demo", "--step", "16", "--out", lut, "--threads", "1",
               "--max-reps", "3", "--for-validation", "9", "--seed", "3", "-q")
    assert res.exit_code == 0, res.output
    keys = variant_keys("demo", 16, 9, seed=3)
    table = Lut.load([lut])
    assert len(table.rows) == len(set(keys))
    val = _run("lut", "validate", "demo", "--lut", lut, "--samples", "9", "--seed", "3",
               "--rounds", "1", "--max-reps", "3", "--strict", "--out", tmp_path / "v", "-q")
    assert val.exit_code == 0, val.output
    assert (pd.read_csv(tmp_path / "v" / "variants.csv")["interpolated_layers"] == 0).all()
    m = resolve_model("demo")
    grid = scan_keys(trace_model(m.module, 32, 1), 16)
    assert len(keys) < len(grid)
    with pytest.raises(LutMissError):
        table.lookup(grid, strict=True)
    # the pruner refuses such a table; once grown to the whole grid, it is a full table
    from hwprune.luts import LatencyModel, LutError

    with pytest.raises(LutError, match="validation variants"):
        LatencyModel(trace_model(m.module, 32, 1), table)
    grown = _run("profile", "demo", "--step", "16", "--out", lut, "--threads", "1",
                 "--max-reps", "3", "-q")
    assert grown.exit_code == 0, grown.output
    full = Lut.load([lut])
    assert len(full.rows) == len(grid) and not any(s.get("keys") for s in full.meta["sources"])
    LatencyModel(trace_model(m.module, 32, 1), full)


def test_validate_in_a_runtime_refuses_a_torch_table_unless_told(demo_lut, tmp_path):
    import pytest

    pytest.importorskip("onnxruntime")
    out = tmp_path / "val"
    args = ("lut", "validate", "demo", "--lut", demo_lut, "--samples", "3", "--rounds", "1",
            "--max-reps", "5", "--out", out, "-q", "--runtime", "onnxruntime")
    _error(_run(*args), "was timed in torch, not onnxruntime", "--allow-mismatch")
    assert not out.exists()
    torch_run = _run(*args[:-2], "--out", tmp_path / "t")  # the same variants in torch
    res = _run(*args, "--allow-mismatch")
    assert res.exit_code == 0, res.output
    assert "in onnxruntime" in res.output and "table timed in torch" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["runtime"]["runtime"] == "onnxruntime" and report["runtime"]["threads"] == 1
    assert report["lut_runtime"] == "torch"
    rt = pd.read_csv(out / "variants.csv")
    assert (rt["measured_in"] == "onnxruntime").all() and (rt["measured_ms"] > 0).all()
    assert torch_run.exit_code == 0
    pt = pd.read_csv(tmp_path / "t" / "variants.csv")
    # the same variants, estimated alike, measured in two runtimes (how the two compare is
    # benchmarks/runtime_gap.py's business, not a unit test's)
    assert rt["channels"].tolist() == pt["channels"].tolist()
    assert rt["estimate_ms"].tolist() == pytest.approx(pt["estimate_ms"].tolist())
    # a torch rerun into the ONNX Runtime directory measures again instead of reusing
    again = _run(*args[:-2], "--out", out)
    assert again.exit_code == 0
    assert (pd.read_csv(out / "variants.csv")["measured_in"] == "torch").all()


def test_a_runtime_is_measured_only_against_a_cpu_table(demo_lut, tmp_path):
    from hwprune.luts import Lut
    from hwprune.profiler import read_lut, write_lut

    rows, meta = read_lut(demo_lut)
    gpu = write_lut(rows, {**meta, "device_kind": "cuda"}, tmp_path / "gpu.parquet")
    import pytest

    from hwprune.luts.lookup import LutError

    with pytest.raises(LutError, match="timed on the CPU here"):
        Lut.load(gpu).check_runtime("onnxruntime", allow_mismatch=True)
    Lut.load(gpu).check_runtime("torch")  # a GPU table measured in torch: fine
