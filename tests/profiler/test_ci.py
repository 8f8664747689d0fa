"""When the adaptive protocol stops: the CI of the median (default) against the mean's."""

import numpy as np
import pytest

from hwprune.profiler.clock import TimingConfig, adaptive, ci95_rel


def _bursty(rng: np.random.Generator, n: int) -> np.ndarray:
    """1 ms calls, 0.3% jitter, and every 10th call hit by a 5-20x burst (a shared VM)."""
    x = rng.normal(1.0, 0.003, n)
    x[::10] *= rng.uniform(5, 20, len(x[::10]))
    return x


def test_the_median_ci_is_the_order_statistics_interval():
    x = np.arange(1, 101, dtype=float)  # median 50.5; k = floor((100 - 19.6) / 2) = 40
    assert ci95_rel(x, "median") == pytest.approx((x[59] - x[40]) / 2 / 50.5)
    assert ci95_rel(x, "mean") == pytest.approx(1.96 * x.std(ddof=1) / 10 / 50.5)
    assert ci95_rel(np.array([1.0]), "median") == float("inf")


def test_bursts_stall_the_mean_not_the_median():
    rng = np.random.default_rng(0)
    draw = lambda n: list(_bursty(rng, n))  # noqa: E731
    cfg = TimingConfig(min_reps=20, max_reps=1000, rel_ci=0.01, max_seconds=60).validate()
    times, ok = adaptive(draw, cfg)
    assert ok and len(times) < 100 and abs(np.median(times) - 1.0) < 0.01
    cfg.ci_of = "mean"
    times, ok = adaptive(draw, cfg)
    assert not ok and len(times) == 1000  # ran to the cap, and its mean is still far off
    assert times.mean() > 1.5


def test_an_unknown_statistic_is_refused():
    from hwprune.profiler.clock import TimingError

    with pytest.raises(TimingError, match="ci_of"):
        TimingConfig(ci_of="mode").validate()


def test_a_chunk_never_runs_far_past_the_time_budget():
    import time

    def slow(n: int) -> list[float]:  # 2 ms calls that never agree: the CI cannot converge
        time.sleep(0.002 * n)
        return list(np.random.default_rng(n).uniform(1, 3, n))

    cfg = TimingConfig(min_reps=10, max_reps=1000, rel_ci=0.001, max_seconds=0.2).validate()
    t0 = time.perf_counter()
    times, ok = adaptive(slow, cfg)
    assert not ok and time.perf_counter() - t0 < 0.2 + 0.1  # at most about one call over


def test_a_minimum_window_keeps_sampling_after_the_ci_is_met():
    import time

    def steady(n: int) -> list[float]:  # 1 ms calls that agree at once
        time.sleep(0.001 * n)
        return [1.0] * n

    cfg = TimingConfig(min_reps=10, max_reps=10_000, max_seconds=5).validate()
    times, ok = adaptive(steady, cfg)
    assert ok and len(times) == 10
    cfg.min_seconds = 0.2
    t0 = time.perf_counter()
    times, ok = adaptive(steady, cfg)
    assert ok and time.perf_counter() - t0 >= 0.2 and len(times) > 100
