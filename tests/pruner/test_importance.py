import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hwprune.luts import Lut, estimate
from hwprune.pruner import (GateTaylor, PruneConfig, Pruner, build_graph, carry_momentum, combine,
                    find_dims, group_error, min_cost_cover, remove_channels)
from hwprune.profiler.keyspace import trace_model
from hwprune.zoo import build_demo, resolve_model


def _demo(width=8, seed=0):
    torch.manual_seed(seed)
    model = build_demo(width=width).eval()
    graph = build_graph(model, torch.zeros(1, 1, 32, 32))
    return model, graph, find_dims(model, graph, trace_model(model, 32, 1))


def test_gate_taylor_equals_a_hand_computation():
    model, _, dims = _demo()
    model.double().train()  # BatchNorm on batch statistics, as while pruning
    batches = [torch.randn(4, 1, 32, 32, dtype=torch.float64) for _ in range(2)]
    targets = [torch.randint(0, 10, (4,)) for _ in range(2)]
    modules = dict(model.named_modules())

    def loss_with(j, c, scale, x, y):
        """The loss with channel c of dimension j scaled at every one of its gate sites."""
        def hook(_m, _i, out):
            out = out.clone()
            out[:, c] *= scale
            return out
        hooks = [modules[s].register_forward_hook(hook) for s in dims[j].gate_sites]
        with torch.no_grad():
            loss = float(F.cross_entropy(model(x), y))
        for h in hooks:
            h.remove()
        return loss

    # By hand: central differences of the loss in each gate, squared, summed over batches.
    eps = 1e-7  # small enough that no ReLU input crosses zero, large against round-off
    expected = [np.zeros(d.channels) for d in dims]
    for x, y in zip(batches, targets):
        for j, d in enumerate(dims):
            for c in range(d.channels):
                g = (loss_with(j, c, 1 + eps, x, y) - loss_with(j, c, 1 - eps, x, y)) / (2 * eps)
                expected[j][c] += g ** 2
    gates = GateTaylor(model, dims)
    with gates.installed():
        for g in gates.gates:
            g.data = g.data.double()
        for x, y in zip(batches, targets):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            gates.accumulate()
    assert gates.batches == 2
    for got, want in zip(gates.scores, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-14)
    assert any(len(d.gate_sites) > 1 for d in dims)  # a residual (shared) gate was covered


def test_combine_with_eta_zero_is_the_error_ranking():
    err = np.array([3.0, 1.0, np.nan, 2.0])
    cost = np.array([-5.0, -0.1, -1.0, -9.0])
    assert np.nanargmin(combine(err, cost, 0.0)) == 1
    assert np.nanargmin(combine(err, cost, 10.0)) == 3  # a big saving outweighs the error
    assert np.isnan(combine(err, cost, 1.0)[2])
    scores = [np.array([5.0, 1.0, 2.0, 9.0]), np.array([1.0, 1.0])]
    np.testing.assert_allclose(group_error(scores, 2), [3.0, np.nan])


def test_latency_term_equals_the_difference_of_two_lut_estimates(teacher_ckpt, teacher_lut):
    teacher = resolve_model(str(teacher_ckpt)).module
    lut = Lut.load(teacher_lut)
    student = copy.deepcopy(teacher)
    p = Pruner(student, teacher, PruneConfig(target_ratio=0.5, group_size=8), 32, 1, lut)
    cost = p._cost(8)
    base = estimate(teacher, lut, 32, 1).total_ms
    for j, d in enumerate(p.dims):
        pruned = copy.deepcopy(teacher)
        graph = build_graph(pruned, torch.zeros(1, 1, 32, 32))
        mine = next(x for x in find_dims(pruned, graph, trace_model(pruned, 32, 1))
                    if x.root == d.root)
        remove_channels(pruned, graph, mine, list(range(8)))
        assert cost[j] == pytest.approx(estimate(pruned, lut, 32, 1).total_ms - base, abs=1e-9)


def test_eta_zero_prunes_the_plain_taylor_choice(teacher_ckpt, teacher_lut, digits):
    teacher = resolve_model(str(teacher_ckpt)).module
    from hwprune.pruner import ImageSet
    data = ImageSet(digits.x_train, digits.y_train)
    picks = {}
    for crit, eta in (("taylor", 0.0), ("taylor-latency", 0.0), ("taylor-latency", 50.0)):
        p = Pruner(copy.deepcopy(teacher), teacher,
                   PruneConfig(criterion=crit, eta=eta, target_ratio=0.9, group_size=8,
                               interval=3, groups_per_step=1, update_weights=False),
                   32, 1, Lut.load(teacher_lut))
        p.data = data
        p.gates.install()
        p.train_interval()
        scores = [s.copy() for s in p.gates.scores]
        p.gates.remove()
        err = group_error(scores, 8)
        j, _ = p.select_greedy(scores)[0]
        picks[(crit, eta)] = p.dims[j].root
        if eta == 0.0:
            assert j == int(np.nanargmin(err))  # the group with the least Taylor error
    assert picks[("taylor", 0.0)] == picks[("taylor-latency", 0.0)]


def test_knapsack_rounding_does_not_lose_cheap_sets():
    third = [np.array([0.334]), np.array([0.334]), np.array([0.334])]
    assert min_cost_cover([np.array([1.0])] * 3, third, 1.0) == [1, 1, 1]
    many = [np.array([0.004])] * 300  # each far below a 200th of the quota
    assert sum(min_cost_cover([np.array([1.0])] * 300, many, 0.4)) == 100


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        costs = [np.cumsum(rng.uniform(0.1, 1, 3)) for _ in range(4)]
        savings = [np.cumsum(rng.uniform(0.1, 1, 3)) for _ in range(4)]
        quota = rng.uniform(0.5, 4)
        counts = min_cost_cover(costs, savings, quota, bins=2000)
        best = min((sum(c[n - 1] for c, n in zip(costs, ns) if n), ns)
                   for ns in itertools.product(range(4), repeat=4)
                   if sum(s[n - 1] for s, n in zip(savings, ns) if n) >= quota)
        got = sum(c[n - 1] for c, n in zip(costs, counts) if n)
        assert sum(s[n - 1] for s, n in zip(savings, counts) if n) >= quota * (1 - 1e-3)
        assert got <= best[0] + 1e-6 or np.isclose(got, best[0], rtol=2e-3)


def test_momentum_is_sliced_with_the_weights():
    model, graph, dims = _demo(width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    F.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.arange(4)).backward()
    opt.step()
    conv = model.block1.conv1[0]
    old = opt.state[conv.weight]["momentum_buffer"].clone()
    old_next = opt.state[model.block1.conv2[0].weight]["momentum_buffer"].clone()
    d = next(x for x in dims if x.root == "block1.conv1.0")
    with carry_momentum(model, opt) as rebuild:
        remove_channels(model, graph, d, [0, 3, 7])
    opt = rebuild()
    keep = [i for i in range(16) if i not in (0, 3, 7)]
    assert torch.equal(opt.state[conv.weight]["momentum_buffer"], old[keep])
    assert torch.equal(opt.state[model.block1.conv2[0].weight]["momentum_buffer"],
                       old_next[:, keep])
    assert all(p.grad is None for p in model.parameters())
    assert opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("criterion", ["taylor", "magnitude", "flops-aware"])
def test_every_criterion_reaches_a_filter_target_without_a_lut(criterion, teacher_ckpt, digits):
    from hwprune.pruner import ImageSet

    teacher = resolve_model(str(teacher_ckpt)).module
    student = copy.deepcopy(teacher)
    for prm in student.parameters():
        prm.requires_grad_(True)
    p = Pruner(student, teacher, PruneConfig(criterion=criterion, target_ratio=0.7, group_size=8,
                                             interval=2, batch_size=16), 32, 1, None)
    p.run(ImageSet(digits.x_train[:64], digits.y_train[:64]))
    assert p.filters() <= 0.7 * p.original_filters
    assert all(d.channels >= 1 for d in p.dims)
    assert student(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    if criterion == "flops-aware":  # the cost term is the MACs saving of each group
        assert np.all(np.nan_to_num(p._cost(8)) <= 0)
