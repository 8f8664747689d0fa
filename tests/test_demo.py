import json

import pytest
from click.testing import CliRunner

from hwprune.cli import cli
from hwprune.demo import DemoConfig, format_table, run_demo
from tests.conftest import only_when_asked


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, path


# The quick demo made smaller still for `make test`: every stage and every table row run as
# in `hwprune demo --quick`, on a width-24 net (a seventh of the width-64 demo's conv work in
# training, profiling, synthesis, pruning and fine-tuning; at width 16 the 50% and 35%
# budgets were below the LUT's floor, 2026-12-06)
# with fewer epochs, images and iterations. Measurement settings (rounds, repetitions,
# retries) stay the quick demo's, so the verdicts rest on the same statistics. One thread,
# as every test here (tests/conftest.py): on a shared 2-core machine two OpenMP threads
# spin against each other. Each value is at most quick mode's own, should it shrink.
SMALL = dict(width=24, teacher_epochs=1, n_images=50, iterations=10, epochs=1, threads=1)


def _small_quick(**kw) -> DemoConfig:
    base = DemoConfig.quick_mode()
    return DemoConfig.quick_mode(**{k: min(v, getattr(base, k)) for k, v in SMALL.items()}, **kw)


@pytest.mark.heavy
@pytest.mark.timeout(900)
def test_quick_demo_runs_end_to_end(tmp_path):
    cfg = _small_quick(out=tmp_path / "demo", progress=False, log=lambda *_: None)
    result = run_demo(cfg)
    assert {(r["budget"], r["criterion"]) for r in result["rows"]} == \
        {(b, c) for b in (0.70, 0.50, 0.35) for c in ("taylor-latency", "taylor")}
    done = [r for r in result["rows"] if "error" not in r]
    assert done, result["rows"]  # at least the loosest budget is reachable
    for r in done:
        assert 0 < r["accuracy"] <= 1 and 0 < r["filters_kept"] < 1
        assert r["measured_ms"] > 0 and r["verdict"] in ("met", "missed", "uncertain")
        assert r["ratio_low"] <= r["measured_ratio"] <= r["ratio_high"]
        # the verdict follows the interval: never 'met' with a ratio above the budget
        assert (r["verdict"] == "met") == (r["ratio_high"] <= r["budget"]), r
        assert (r["verdict"] == "missed") == (r["ratio_low"] > r["budget"]), r
        assert (tmp_path / "demo" / "runs" / r["run"] / "pruned.pt").is_file()
    # The loop stops on its own measurement; the row's verdict is a fresh one taken after
    # it (issue 31), which on a shared machine may straddle or even miss the budget the
    # loop's met, so only the loop's claims are checked here, not the machine's noise.
    for r in done:
        if r["criterion"] == "taylor-latency":
            # the loop claims 'met' only on a met verdict of its own measurement, and stops
            # short of met only at the LUT's floor or out of retries
            assert r["loop_stopped"] != "met" or r["loop_verdict"] == "met", r
            assert r["loop_stopped"] in ("met", "met on its point estimate",
                                         "at the LUT's floor", "out of retries"), r
            assert r["settled"] in ("met", "missed") and r["settled_by"], r
    # Each criterion's tighter budget continues from its looser one's pruned student
    by = {(r["budget"], r["criterion"]): r for r in done}
    for (b, crit), r in by.items():
        looser = [x for x in (0.70, 0.50) if x > b and (x, crit) in by]
        assert r["started_from"] == (str(tmp_path / "demo" / "runs" / f"{crit}-{min(looser):.2f}")
                                     if looser else None), r
    for r in result["rows"]:
        if "error" in r:  # only ever because the LUT says the budget is out of reach
            assert "below what pruning can reach" in r["error"]
    table = format_table(result)
    assert all(f"{b}%" in table for b in (70, 50, 35))
    # the table states each verdict (met / missed / uncertain) and the ratio interval
    rows_text = {line.split("|")[0].strip(): line for line in table.splitlines()
                 if line.split("|")[0].strip() in ("70%", "50%", "35%")}
    for r in done:
        cell = rows_text[f"{100 * r['budget']:.0f}%"].split("|")[
            1 if r["criterion"] == "taylor-latency" else 2]
        assert r["verdict"] in cell.split() and \
            f"[{100 * r['ratio_low']:.0f}-{100 * r['ratio_high']:.0f}]" in cell, (cell, r)
    assert "verdict: met" in table and " yes" not in table and " NO" not in table
    assert all(w in table for w in result["warnings"])
    for name in ("accuracy_vs_latency.png", "digits_synth_vs_real.png",
                 "validate/estimate_vs_measured.png"):
        _png(tmp_path / "demo" / name)
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["rows"]
    # A second run reuses the cached teacher and images but re-measures everything else
    logs = []
    run_demo(_small_quick(out=tmp_path / "demo", budgets=(0.7,), progress=False,
                          log=logs.append))
    assert any("reusing" in str(m) for m in logs)


def test_demo_help_explains_itself():
    r = CliRunner().invoke(cli, ["demo", "--help"])
    assert r.exit_code == 0 and "--quick" in r.output and "DeepInversion" in r.output


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_demo_prunes_for_onnx_runtime(tmp_path, request):
    """The whole job with the LUT timed and every budget measured in ONNX Runtime, and each
    student's speed-up measured in PyTorch beside it (one budget: the rest is the same path;
    the runtime's own steps are tested fast in tests/luts/test_runtime_tables.py)."""
    only_when_asked(request, 110)
    pytest.importorskip("onnxruntime")
    from hwprune.luts import Lut

    cfg = _small_quick(out=tmp_path / "demo", budgets=(0.5,), runtime="onnxruntime",
                       progress=False, log=lambda *_: None)
    result = run_demo(cfg)
    assert result["runtime"] == "onnxruntime"
    lut = Lut.load(tmp_path / "demo" / "lut.parquet")
    assert lut.runtime == "onnxruntime" and lut.calibration is not None
    done = [r for r in result["rows"] if "error" not in r]
    assert done, result["rows"]
    for r in done:
        assert r["speedup"] > 0 and r["torch_speedup"] > 0
        assert r["torch_pruned_ms"] > 0 and r["torch_teacher_ms"] > 0
        assert (tmp_path / "demo" / "runs" / r["run"] / "pruned.onnx").is_file()
        report = json.loads((tmp_path / "demo" / "runs" / r["run"] / "report.json").read_text())
        assert report["measured"]["runtime"]["runtime"] == "onnxruntime"
    table = format_table(result)
    assert "measured in onnxruntime | in PyTorch" in table
    assert "teacher: " in table and "in onnxruntime" in table.splitlines()[0]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_demo_in_onnx_runtime_from_the_command_line(tmp_path, request):
    only_when_asked(request, 340)
    pytest.importorskip("onnxruntime")
    r = CliRunner().invoke(cli, ["demo", "--quick", "--runtime", "onnxruntime", "--out",
                                 str(tmp_path / "d"), "-q"])
    assert r.exit_code == 0, r.output
    assert "measured in onnxruntime | in PyTorch" in r.output
