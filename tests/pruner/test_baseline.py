"""Torch-Pruning's own pruner brought to a measured budget (the Table 9 baseline)."""

import pytest
import torch

from hwprune.luts import Lut, estimate
from hwprune.pruner.baseline import (BaselineError, TorchPruningConfig, monotone_limit,
                                     prune_fraction, to_measured_budget)
from hwprune.pruner.data import load_images
from hwprune.pruner.measure import measure_settled
from hwprune.zoo import resolve_model


def _filters(m):  # per layer, for the round_to check (conv_filters sums them)
    return [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)]


@pytest.mark.parametrize("importance", ["taylor", "magnitude"])
def test_a_fraction_is_removed_on_the_group_grid_and_the_classifier_kept(teacher_ckpt,
                                                                         importance):
    teacher = resolve_model(str(teacher_ckpt)).module.eval()
    images = load_images("digits", 32)
    cfg = TorchPruningConfig(importance=importance, group_size=8, batches=2, batch_size=32)
    before = {n: p.clone() for n, p in teacher.state_dict().items()}
    student = prune_fraction(teacher, images, 0.5, cfg)
    assert sum(_filters(student)) < sum(_filters(teacher))
    assert all(c % 8 == 0 for c in _filters(student))  # round_to = the table's step
    assert student(images.images[:2]).shape == (2, 10)  # the classes stay
    assert all(torch.equal(before[n], p) for n, p in teacher.state_dict().items())
    assert not any(p.grad is not None for p in student.parameters())


def test_the_baseline_reaches_a_measured_target_on_a_tiny_model(teacher_ckpt, teacher_lut):
    """Real measurements in interleaved rounds: the least pruning found that meets 70%."""
    teacher = resolve_model(str(teacher_ckpt)).module.eval()
    lut = Lut.load(teacher_lut)
    images = load_images("digits", 32)
    goal = 0.7

    def measure(student):
        return measure_settled(teacher, student, lut, 32, 1, 8, 30, goal)

    cfg = TorchPruningConfig(group_size=8, batches=2, batch_size=32, steps=5)
    student, info = to_measured_budget(teacher, images, goal, measure, cfg)
    assert info["measured"]["settled"] == "met" and info["measured"]["ratio"] > 0
    assert sum(_filters(student)) < sum(_filters(teacher))
    met = [h["fraction"] for h in info["search"] if h["settled"] == "met"]
    missed = [h["fraction"] for h in info["search"] if h["settled"] != "met"]
    assert info["fraction"] == min(met)  # the least pruning that met
    assert all(f < info["fraction"] for f in missed)  # bisection: misses lie below it
    assert len(info["search"]) == cfg.steps


def test_bisection_finds_the_boundary_of_a_deterministic_measurement(teacher_ckpt,
                                                                     teacher_lut):
    """With the LUT's estimate as the 'measurement' the search is exact: the fraction found
    meets the goal and one bisection interval less does not."""
    teacher = resolve_model(str(teacher_ckpt)).module.eval()
    lut = Lut.load(teacher_lut)
    full = estimate(teacher, lut, 32, 1).total_ms
    cfg = TorchPruningConfig(importance="magnitude", group_size=8, steps=6)
    images = load_images("digits", 32)
    # The goal halfway between the most Torch-Pruning reaches here and the teacher: where
    # its limit lies depends on the trained teacher's weights (0.4 in one clean-clone run)
    floor = estimate(prune_fraction(teacher, images, monotone_limit(teacher, images, cfg), cfg),
                     lut, 32, 1).total_ms / full
    goal = (1 + floor) / 2

    def measure(student, goal=goal):
        r = estimate(student, lut, 32, 1).total_ms / full
        return {"ratio": r, "ratio_low": r, "ratio_high": r,
                "settled": "met" if r <= goal else "missed", "settled_by": "interval"}

    _, info = to_measured_budget(teacher, images, goal, measure, cfg)
    assert info["measured"]["ratio"] <= goal
    step = info["limit"] / 2 ** (cfg.steps - 1)
    below = estimate(prune_fraction(teacher, images, info["fraction"] - step, cfg), lut, 32,
                     1).total_ms / full
    assert below > goal or info["fraction"] - step <= 0
    with pytest.raises(BaselineError, match="out of its reach"):
        to_measured_budget(teacher, images, 0.001, lambda s: measure(s, 0.001), cfg)
    with pytest.raises(BaselineError, match="importance 'l1'"):
        to_measured_budget(teacher, images, goal, measure, TorchPruningConfig(importance="l1"))


def test_the_ladder_passes_plateaus_and_stops_where_more_removes_less(monkeypatch):
    """Filters kept at 0.1, 0.2, ...: a round_to plateau is passed over; a rise ends it."""
    import hwprune.pruner.baseline as b

    kept = {0.1: 90, 0.2: 90, 0.3: 80, 0.4: 70, 0.5: 75, 0.6: 60, 0.7: 50, 0.8: 40, 0.9: 30}
    monkeypatch.setattr(b, "prune_fraction", lambda t, i, f, c: f)
    monkeypatch.setattr(b, "conv_filters", lambda m: 100 if isinstance(m, torch.nn.Module)
                        else kept[round(m, 1)])
    assert b.monotone_limit(torch.nn.Identity(), None, TorchPruningConfig()) == 0.4
    kept.update({k: 100 for k in kept})
    with pytest.raises(BaselineError, match="removes nothing"):
        b.monotone_limit(torch.nn.Identity(), None, TorchPruningConfig())
