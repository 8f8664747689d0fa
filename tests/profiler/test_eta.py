"""The scan's ETA (issue 31, item 5): when it is printed and how far a scripted scan moves it.

The wall-clock check on real models is ``benchmarks/profile_eta.py``; here the keys' times
are scripted, so the estimator's own error is what is measured."""

import random

import pytest

from hwprune.profiler.run import _EtaRefinement


def _scan(n: int, seed: int, noise: float, speed: float = 3.0):
    """Pilot estimates spread over 100x and a machine ``speed`` times slower than the pilot
    thought, each key off by a log-normal factor: (pilot's per-key list, real per-key)."""
    rng = random.Random(seed)
    pilot = [10 ** rng.uniform(-3, -1) for _ in range(n)]
    real = [p * speed * rng.lognormvariate(0.0, noise) for p in pilot]
    return pilot, real


def _run(pilot, real, show=False):
    eta, elapsed = _EtaRefinement(pilot, show), 0.0
    for i, t in enumerate(real, 1):
        elapsed += t
        eta.after(i, elapsed)
    return eta


def test_no_eta_before_a_fifth_of_the_keys_and_five_seconds():
    pilot = [1.0] * 100
    eta = _run(pilot, [0.5] * 19)  # 19 keys of 100: 9.5 s, not yet a fifth
    assert eta.scan_seconds is None
    eta = _EtaRefinement(pilot, False)
    for i in range(1, 31):  # 0.1 s per key: a fifth after 2 s, but 5 s only at key 50
        eta.after(i, 0.1 * i)
    assert eta.scan_seconds is None
    for i in range(31, 101):
        eta.after(i, 0.1 * i)
    assert eta.at_keys == 50 and eta.scan_seconds == pytest.approx(10.0)


def test_a_long_scan_gets_its_eta_after_two_minutes():
    pilot, real = [1.0] * 10_000, [4.0] * 10_000
    eta = _run(pilot, real)
    assert eta.at_keys == 32  # 128 s: long before a fifth (2,000 keys)
    assert eta.scan_seconds == pytest.approx(40_000.0)


def test_the_eta_weights_keys_by_the_pilots_estimate():
    # The first keys are the pilot's small ones: counting keys would predict 100x too
    # little, the pilot's weights predict the scan.
    pilot = [0.01] * 500 + [1.0] * 500
    real = [3 * p for p in pilot]
    eta = _run(pilot, real)
    assert eta.scan_seconds == pytest.approx(sum(real))


def test_the_eta_stays_within_1_5x_of_a_noisy_randomly_ordered_scan():
    # Each key's real time over the pilot's estimate had a log-spread of 0.6-1.0 (robust;
    # 0.8-2.1 as a std) in five CPU scans on 2026-12-07: 1.0 here, 700 keys like the demo's.
    # At a tenth of the keys 5 of these 200 scans missed 1.5x; the rule allows 2%.
    ratios = []
    for seed in range(200):
        pilot, real = _scan(700, seed, noise=1.0)
        ratios.append(_run(pilot, real).scan_seconds / sum(real))
    inside = sum(1 / 1.5 <= r <= 1.5 for r in ratios)
    assert inside >= 196, sorted(ratios)[:3] + sorted(ratios)[-3:]


def test_the_eta_is_printed_once(capsys):
    pilot, real = _scan(200, 0, noise=0.2)
    _run(pilot, [t * 100 for t in real], show=True)
    err = capsys.readouterr().err
    assert err.count("ETA ~") == 1 and "more (the first" in err
