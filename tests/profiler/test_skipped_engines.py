"""cuDNN engines that build but fail to execute or be captured are counted, with their
error, in the table and by `lut info`, not dropped unseen. The engine loop is driven on the
CPU by a stand-in for cuDNN's graph (the real one needs a GPU: tests/profiler/test_timing_gpu.py)."""

from __future__ import annotations

import pytest

import hwprune.profiler.cudnn_algos as algos
import hwprune.profiler.run as run_mod
from hwprune.profiler import ProfileConfig, TimingConfig, profile_model, read_lut
from hwprune.profiler.clock import Stats, TimingError
from hwprune.profiler.keyspace import OpKey

KEY = OpKey(op="conv2d", c_in=8, c_out=8, kernel_h=3, kernel_w=3, stride_h=1, stride_w=1,
            pad_h=1, pad_w=1, groups=1, in_h=8, in_w=8)


def _stats(ms: float, algo: str) -> Stats:
    return Stats(ms, ms, ms, 0.0, 10, 0.01, True, algo, 0.01)


class FakeGraph:
    """Four plans: 0 runs, 1 is unsupported (cuDNN refuses to build it: not a failure), 2
    fails at execution, 3 runs."""

    cudnn = type("cudnn", (), {"cudnnGraphNotSupportedError": RuntimeError})

    def __init__(self, *args, **kwargs) -> None:
        self.closed = False

    def plan_count(self) -> int:
        return 4

    def call(self, i: int):
        if i == 1:
            return None
        if i == 2:
            raise RuntimeError("CUDNN_STATUS_EXECUTION_FAILED\nmore detail")
        return lambda: None

    def plan_name(self, i: int) -> str:
        return f"eng{i}"

    def close(self) -> None:
        self.closed = True


def test_failed_engines_are_kept_with_their_error(monkeypatch):
    monkeypatch.setattr(algos, "_ConvGraph", FakeGraph)
    monkeypatch.setattr(algos.torch.cuda, "Stream", lambda: None)
    monkeypatch.setattr(algos, "time_callable",
                        lambda run, cfg, name, copies, stream: _stats(1.0, name))
    results = algos.time_conv_engines(KEY, TimingConfig(device="cpu"))
    assert [r.algo for r in results] == ["cudnn:eng0", "cudnn:eng3"]
    assert results[0].skipped == ("eng2: RuntimeError: CUDNN_STATUS_EXECUTION_FAILED",)
    assert "skipped" not in results[0].as_dict()  # not a row column

    class AllFail(FakeGraph):
        def call(self, i):
            raise RuntimeError("CUDNN_STATUS_EXECUTION_FAILED")

    monkeypatch.setattr(algos, "_ConvGraph", AllFail)
    with pytest.raises(TimingError, match="4 failed: eng0: RuntimeError"):
        algos.time_conv_engines(KEY, TimingConfig(device="cpu"))


def test_the_profile_counts_skipped_engines_and_lut_info_shows_them(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from hwprune.cli import cli

    real = run_mod.measure_key

    def measure_key(key, tc):
        stats = real(key, tc)
        stats.skipped = ("eng7: RuntimeError: capture failed",)
        return stats

    monkeypatch.setattr(run_mod, "measure_key", measure_key)
    res = profile_model(ProfileConfig("demo", tmp_path / "t.parquet", step=64, progress=False,
                                      layers=["fc"],
                                      timing=TimingConfig(max_reps=5, warmup=1, threads=1)))
    meta = read_lut(res.out)[1]
    n = res.keys_measured
    assert n > 0 and meta["engines_skipped"] == {
        "keys": n, "errors": {"eng7: RuntimeError: capture failed": n}}
    info = CliRunner().invoke(cli, ["lut", "info", str(res.out)])
    assert info.exit_code == 0, info.output
    assert f"{n} engine runs failed on {n} keys" in info.output
    assert f"{n} x eng7: RuntimeError: capture failed" in info.output
