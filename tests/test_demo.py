import json

import pytest
from click.testing import CliRunner

from hwprune.cli import cli
from hwprune.demo import DemoConfig, format_table, run_demo


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, path


@pytest.mark.timeout(900)
def test_quick_demo_runs_end_to_end(tmp_path):
    cfg = DemoConfig.quick_mode(out=tmp_path / "demo", progress=False, log=lambda *_: None)
    result = run_demo(cfg)
    assert {(r["budget"], r["criterion"]) for r in result["rows"]} == \
        {(b, c) for b in (0.70, 0.50, 0.35) for c in ("taylor-latency", "taylor")}
    done = [r for r in result["rows"] if "error" not in r]
    assert done, result["rows"]  # at least the loosest budget is reachable
    for r in done:
        assert 0 < r["accuracy"] <= 1 and 0 < r["filters_kept"] < 1
        assert r["measured_ms"] > 0 and isinstance(r["meets_budget"], bool)
        assert (tmp_path / "demo" / "runs" / r["run"] / "pruned.pt").is_file()
    # The demo's promise: a hardware-aware model measures within its budget (the two
    # networks' round-to-round spread allowed), unless the LUT says it cannot get there.
    for r in done:
        if r["criterion"] == "taylor-latency" and r["loop_stopped"] != "at the LUT's floor":
            assert r["meets_budget"], r
    for r in result["rows"]:
        if "error" in r:  # only ever because the LUT says the budget is out of reach
            assert "below what pruning can reach" in r["error"]
    table = format_table(result)
    assert all(f"{b}%" in table for b in (70, 50, 35))
    for name in ("accuracy_vs_latency.png", "digits_synth_vs_real.png",
                 "validate/estimate_vs_measured.png"):
        _png(tmp_path / "demo" / name)
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["rows"]
    # A second run reuses the cached teacher and images but re-measures everything else
    logs = []
    run_demo(DemoConfig.quick_mode(out=tmp_path / "demo", budgets=(0.7,), progress=False,
                                   log=logs.append))
    assert any("reusing" in str(m) for m in logs)


def test_demo_help_explains_itself():
    r = CliRunner().invoke(cli, ["demo", "--help"])
    assert r.exit_code == 0 and "--quick" in r.output and "DeepInversion" in r.output
