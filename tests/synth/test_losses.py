import math

import pytest
import torch
from torch import nn

from hwprune.synth import BNStatsHook, competition, js_divergence, l2_prior, tv_l1, tv_l2


def test_tv_terms_match_a_hand_computation():
    x = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])
    # horizontal: (1-2), (4-8); vertical: (1-4), (2-8); diagonals: (4-2), (1-8)
    h, v, d1, d2 = [-1.0, -4.0], [-3.0, -6.0], [2.0], [-7.0]
    norm = lambda a: math.sqrt(sum(t * t for t in a))  # noqa: E731
    assert tv_l2(x).item() == pytest.approx(norm(h) + norm(v) + norm(d1) + norm(d2))
    mean_abs = lambda a: sum(abs(t) for t in a) / len(a)  # noqa: E731
    assert tv_l1(x).item() == pytest.approx(mean_abs(h) + mean_abs(v) + mean_abs(d1)
                                            + mean_abs(d2))
    assert tv_l2(torch.ones(2, 3, 5, 5)).item() == 0.0


def test_l2_prior_is_the_mean_image_norm():
    x = torch.zeros(2, 1, 2, 2)
    x[0, 0, 0, 0] = 3.0
    x[1, 0, 1, 1] = 4.0
    x[1, 0, 0, 1] = 3.0
    assert l2_prior(x).item() == pytest.approx((3.0 + 5.0) / 2)


def test_js_divergence_and_competition():
    a = torch.tensor([[10.0, -10.0]])
    assert js_divergence(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert competition(a, a).item() == pytest.approx(1.0)
    far = js_divergence(torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]]), 1.0)
    assert far.item() == pytest.approx(math.log(2), rel=1e-4)  # disjoint: ln 2
    p, q = torch.tensor([[0.2, 0.8]]), torch.tensor([[0.6, 0.4]])
    m = (p + q) / 2
    kl = lambda s, t: (s * (s / t).log()).sum()  # noqa: E731
    hand = 0.5 * (kl(p, m) + kl(q, m))
    assert js_divergence(p.log(), q.log(), 1.0).item() == pytest.approx(hand.item(), rel=1e-5)


def test_hooked_bn_statistics_equal_torchs():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.eval()
    hook = BNStatsHook(bn)
    x = torch.randn(6, 4, 5, 5) * 3 + 1
    bn(x)
    ref = nn.BatchNorm2d(4, momentum=1.0).train()  # momentum 1: running stats = this batch's
    ref(x)
    n = x.numel() / 4
    assert torch.allclose(hook.mean, ref.running_mean, atol=1e-5)
    assert torch.allclose(hook.var * n / (n - 1), ref.running_var, atol=1e-4)  # torch: unbiased
    expected = (hook.mean - bn.running_mean).norm() + (hook.var - bn.running_var).norm()
    assert hook.loss.item() == pytest.approx(expected.item())
    hook.remove()
