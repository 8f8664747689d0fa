"""The budget verdict on synthetic per-round ratios: met, missed, uncertain, never 'met' above."""

import math

import pytest

from hwprune.luts.verdict import (SPREAD_WARN, RatioVerdict, confidence_text, order_k, ratio_verdict,
                          spread_warning, verdict_of)


def test_met_when_every_round_is_within_the_budget():
    v = ratio_verdict([0.62, 0.66, 0.64, 0.65, 0.67], budget=0.70)
    assert v.verdict == "met" and v.text == "met"
    assert (v.low, v.ratio, v.high) == (0.62, 0.65, 0.67)
    assert v.confidence == pytest.approx(1 - 2 ** -5)  # sign test, 5 rounds: 96.9%


def test_missed_when_every_round_is_above_the_budget():
    v = ratio_verdict([0.78, 0.82, 0.86], budget=0.70)
    assert v.verdict == "missed" and v.text == "missed"


def test_uncertain_when_the_interval_straddles_the_budget():
    v = ratio_verdict([0.66, 0.69, 0.74], budget=0.70)
    assert v.ratio < 0.70 and v.verdict == "uncertain"  # the median alone would pass
    assert v.text == f"uncertain (spread {100 * (0.74 - 0.66) / 0.69:.0f}%)" == \
        "uncertain (spread 12%)"


@pytest.mark.parametrize("rounds", [
    [0.82, 0.82], [0.5, 0.82, 1.2], [0.82], [0.30, 0.40, 0.82, 0.9, 1.5],
    [0.82, 0.81, 0.83, 0.9, 0.7, 0.75, 0.85, 0.6, 0.95, 0.82, 0.82]])
def test_82_percent_is_never_met_for_a_70_percent_budget(rounds):
    """The case a user saw as 'ok': whatever the spread, a median of 82% is not 'met'."""
    v = ratio_verdict(rounds, budget=0.70)
    assert v.ratio == pytest.approx(0.82) and v.verdict in ("missed", "uncertain")
    assert v.low <= v.ratio <= v.high


def test_interval_and_confidence_follow_the_sign_test():
    # up to 7 rounds: min..max, confidence 1 - 2^-n each side; from 8 on, inner order
    # statistics at >= 95%
    for n, k, conf in [(1, 1, 0.5), (2, 1, 0.75), (3, 1, 0.875), (5, 1, 1 - 1 / 32),
                       (7, 1, 1 - 1 / 128), (8, 2, 1 - 9 / 256), (11, 3, 1 - 67 / 2048)]:
        v = ratio_verdict(list(range(1, n + 1)))
        assert order_k(n) == k and (v.low, v.high) == (k, n + 1 - k), n
        assert v.confidence == pytest.approx(conf), n
        assert v.verdict is None and v.text is None  # no budget, no verdict
    for n in range(8, 40):  # the bounds' one-sided error stays within 5%
        assert ratio_verdict(list(range(n))).confidence >= 0.95
    assert ratio_verdict([3, 1, 2]).low == 1  # unsorted input


def test_one_round_or_a_stand_in_counts_as_exact_point():
    v = verdict_of({"teacher_ms": 2.0, "pruned_ms": 1.3}, 0.7)
    assert (v.low, v.high, v.rounds, v.verdict) == (0.65, 0.65, 1, "met")
    v = verdict_of({"teacher_ms": 2.0, "pruned_ms": 1.3, "round_ratios": [0.6, 0.75]}, 0.7)
    assert v.verdict == "uncertain"


def test_bad_input_and_texts():
    with pytest.raises(ValueError):
        ratio_verdict([])
    with pytest.raises(ValueError):
        ratio_verdict([0.5, math.nan])
    assert [confidence_text(c) for c in (0.5, 0.75, 0.875, 1 - 1 / 32, 0.98)] == \
        ["50%", "75%", "87.5%", "96.9%", "98%"]
    v = RatioVerdict(0.655, 0.63, 0.69, 0.96875, 5, 0.7)
    assert v.describe() == "66% of the teacher (63-69% at 96.9% confidence, 5 rounds)"
    assert v.as_dict()["verdict"] == "met" and v.as_dict()["budget"] == 0.7


def test_spread_warning_states_the_figure_above_the_threshold():
    assert SPREAD_WARN == 0.10
    assert spread_warning(0.05) is None and spread_warning(0.10) is None
    assert spread_warning(None) is None and spread_warning(math.nan) is None
    w = spread_warning(0.234)
    assert w.startswith("warning: measurements on this machine varied 23% between rounds")
    assert "uncertain may flip on a rerun" in w
    assert spread_warning(0.3, consequence="R² carries it").endswith("R² carries it")


def test_lut_validate_warns_when_its_rounds_varied(demo_lut, tmp_path, monkeypatch):
    """`lut validate` prints the warning with its figure (and stores it in report.json)."""
    import importlib
    import json

    from click.testing import CliRunner

    from hwprune.cli import cli
    from hwprune.luts.lookup import STATS

    def noisy(nets, x, tc, rounds, progress=True, reference=None, timer=None):
        # variant j: (1 + j), then 30% slower; no drift readings
        times = {tag: [(1.0 + j) * (1 + 0.3 * (i % 2)) for i in range(rounds)]
                 for j, tag in enumerate(nets)}
        return ({tag: {**{s: list(times[tag]) for s in STATS}, "ref_ms": [float("nan")] * rounds}
                 for tag in nets},
                {tag: [0.01] * rounds for tag in nets})

    # the module (the package's `validate` attribute is the function of the same name)
    monkeypatch.setattr(importlib.import_module("hwprune.luts.validate"), "measure_interleaved", noisy)
    out = tmp_path / "val"
    r = CliRunner().invoke(cli, ["lut", "validate", "demo", "--lut", str(demo_lut),
                                 "--samples", "3", "--rounds", "2", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    line = "warning: measurements on this machine varied 26% between rounds"
    assert line in r.output
    assert json.loads((out / "report.json").read_text())["spread_warning"].startswith(line)
