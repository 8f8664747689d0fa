"""``prune --snap``: channel counts rounded up to the top of their LUT step, at no LUT cost,
grown back so that the network computes what the pruned one did."""

import copy
import math

import numpy as np
import pytest
import torch

from hwprune.luts import Lut, LatencyModel
from hwprune.pruner import MacsTable, PruneConfig, Pruner
from hwprune.pruner.schedule import cpu_trace
from tests.pruner.test_job import _job
from tests.pruner.test_plan import STEP, SteppedTable
from hwprune.zoo import build_demo, load_checkpoint, resolve_model

G = 16


def _teacher(seed=0):
    """The demo net with random weights and BatchNorm statistics far from (0, 1), so that a
    grown channel left un-zeroed somewhere would change the outputs."""
    torch.manual_seed(seed)
    net = build_demo().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    for prm in net.parameters():
        prm.requires_grad_(False)
    return net


def _pruner(table, group=G, seed=0):
    teacher = _teacher(seed)
    student = copy.deepcopy(teacher)
    for prm in student.parameters():
        prm.requires_grad_(True)
    return Pruner(student, teacher, PruneConfig(target_ratio=0.5, group_size=group), 32, 1,
                  table)


def _pruned(table, cuts, seed=0, group=G):
    """A Pruner whose student lost ``cuts[j]`` random (not trailing) channels of dim j."""
    p = _pruner(table, group, seed)
    rng = np.random.default_rng(seed)
    for j, k in cuts.items():
        for _ in range(k // group):  # a group at a time, as the pruner removes them
            p._remove(j, rng.choice(p.dims[j].channels, group, replace=False))
    return p


def _estimate(model, table):
    return LatencyModel(cpu_trace(model, 32, 1), table).total_ms


def test_snap_grows_to_the_top_of_each_step_and_keeps_the_function():
    table = SteppedTable()
    probe = _pruned(table, {})
    cuts = {j: d.channels - G for j, d in enumerate(probe.dims) if d.channels > 2 * G}
    cuts[0] = G  # one dimension one group down only: 48 of 64 is mid-step too
    p = _pruned(table, cuts)
    before = {d.root: d.channels for d in p.dims}
    x = torch.randn(8, 1, 32, 32)
    with torch.no_grad():
        y_pruned = p.student.eval()(x)
    est_before, filters_before = _estimate(p.student, table), p.filters()
    kept_before = copy.deepcopy(p.kept)
    res = p.snap()
    # every cut dimension grew to the top of its tile, none past its original width
    for d in p.dims:
        original = len(p.kept[d.root]) + len(p.removed[d.root])
        want = min(original, STEP * math.ceil(before[d.root] / STEP))
        assert d.channels == want, (d.root, before[d.root], d.channels)
    assert res.grown and res.filters_added > 0
    assert res.filters_after == p.filters() > filters_before == res.filters_before
    assert res.estimated_ms_after <= res.estimated_ms_before
    assert _estimate(p.student, table) == pytest.approx(est_before, rel=1e-12)
    with torch.no_grad():
        y_grown = p.student.eval()(x)
    assert torch.allclose(y_grown, y_pruned, atol=1e-5), (y_grown - y_pruned).abs().max()
    # a grown filter is the teacher's (the stem reads the image, no pruned channel)
    stem = "stem.0"
    assert stem in res.grown
    added = np.setdiff1d(p.kept[stem], kept_before[stem])
    rows = np.searchsorted(p.kept[stem], added)
    mods, refs = dict(p.student.named_modules()), dict(p.teacher.named_modules())
    assert len(added) == res.grown[stem][1] - res.grown[stem][0]
    assert torch.equal(mods[stem].weight.data[rows], refs[stem].weight.data[added])


def test_on_an_evenly_sloped_table_nothing_grows():
    table = MacsTable()
    probe = _pruned(table, {})
    p = _pruned(table, {j: G for j, d in enumerate(probe.dims) if d.channels > G})
    weights = {k: v.clone() for k, v in p.student.state_dict().items()}
    res = p.snap()
    assert res.grown == {} and res.filters_added == 0
    assert res.estimated_ms_after == res.estimated_ms_before
    assert all(torch.equal(v, p.student.state_dict()[k]) for k, v in weights.items())


def test_snap_on_a_real_lut_never_raises_the_estimate(demo_lut):
    lut = Lut.load(demo_lut)  # measured at step 32: the pruner's groups are 32 here too
    widths = [d.channels for d in _pruner(lut, 32).dims]
    for seed in range(3):
        rng = np.random.default_rng(seed)
        p = _pruned(lut, {j: 32 * int(rng.integers(0, c // 32)) for j, c in enumerate(widths)},
                    seed, 32)
        est, filters = _estimate(p.student, lut), p.filters()
        res = p.snap()
        assert _estimate(p.student, lut) <= est * (1 + 1e-12)
        assert p.filters() >= filters
        assert res.estimated_ms_after <= res.estimated_ms_before


def _stepped_lut(src, out, tile=16):
    """``src``'s keys with every operator's latency a staircase of ``tile`` channels (a
    device whose kernels run channels in tiles), written as a LUT file."""
    from hwprune.profiler.table import read_lut, write_lut

    rows, meta = read_lut(src)
    ms = 0.01 * np.ceil(rows.c_in / tile) * np.ceil(rows.c_out / tile)
    for col in ("mean_ms", "median_ms", "min_ms", "hot_mean_ms", "hot_median_ms", "hot_min_ms"):
        rows[col] = np.where(rows[col].isna(), np.nan, ms)
    rows["ref_ms"] = rows["ref_ms"].iloc[0]  # one machine speed: the drift factor is 1
    write_lut(rows, meta, out)
    return out


def test_a_job_with_snap_grows_reports_and_saves_the_grown_model(teacher_ckpt, teacher_lut,
                                                                 tmp_path):
    from hwprune.pruner.run import run_job

    lut_path = _stepped_lut(teacher_lut, tmp_path / "stepped.parquet")
    lut = Lut.load(lut_path)
    teacher = resolve_model(str(teacher_ckpt)).module
    target = 0.6 * _estimate(teacher, lut)
    rep = run_job(_job(teacher_ckpt, lut_path, tmp_path / "s", target, snap=True))
    snap = rep["snap"]
    # groups of 8 (FAST) on tiles of 16: a dimension left at an odd number of groups grows
    assert snap["grown"], snap
    for before, after in snap["grown"].values():
        assert before % 16 == 8 and after == before + 8
    assert snap["estimated_ms_after"] <= snap["estimated_ms_before"]
    assert snap["filters_after"] > snap["filters_before"]
    assert rep["after"]["estimated_ms"] == pytest.approx(snap["estimated_ms_after"], rel=1e-9)
    assert all(rep["after"]["channels"][r] == b for r, (_, b) in snap["grown"].items())
    saved = load_checkpoint(tmp_path / "s" / "pruned.pt").module
    assert _estimate(saved, lut) == pytest.approx(rep["after"]["estimated_ms"], rel=1e-9)
    original = sum(rep["before"]["channels"].values())  # every producer's filters
    assert rep["filters_kept"] == pytest.approx(snap["filters_after"] / original)
    assert "accuracy" in rep and "measured" in rep


@pytest.mark.heavy
def test_a_snapped_run_resumed_after_interruption_grows_the_same_filters(
        teacher_ckpt, teacher_lut, tmp_path, monkeypatch):
    from hwprune.pruner.run import run_job
    from tests.pruner.test_job import _assert_same_run, interrupt_prune_step

    lut_path = _stepped_lut(teacher_lut, tmp_path / "stepped.parquet")
    kw = dict(groups_per_step=1, target_ratio=0.6, snap=True, job_kw=dict(checkpoint_every=0))
    whole = run_job(_job(teacher_ckpt, lut_path, tmp_path / "whole", None, **kw))
    assert whole["snap"]["grown"] and len(whole["trajectory"]) >= 3
    calls = interrupt_prune_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_job(_job(teacher_ckpt, lut_path, tmp_path / "cut", None, **kw))
    calls["at"] = None
    resumed = run_job(_job(teacher_ckpt, lut_path, tmp_path / "cut", None, **kw))
    assert resumed["snap"] == whole["snap"]
    _assert_same_run(whole, resumed, tmp_path / "whole", tmp_path / "cut")
