import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hwprune.profiler import ProfileConfig, TimingConfig, merge_luts, profile_model, read_lut
from hwprune.profiler.keyspace import KEY_FIELDS, scan_keys, trace_model
from hwprune.profiler.store import parts_dir
from hwprune.zoo import resolve_model

FAST = dict(max_reps=3, warmup=1, threads=1)


def _keyset(df: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, df[list(KEY_FIELDS)].itertuples(index=False)))


def _demo_grid(step: int) -> int:
    m = resolve_model("demo")
    return len(scan_keys(trace_model(m.module, 32, 1), step))


def _cmd(out: Path, *extra: str) -> list[str]:
    # 10 repetitions a key (was 30): the 200 keys still take seconds, far longer than the
    # 0.05 s between the checks for the 40 parts before the kill
    return [sys.executable, "-m", "hwprune", "profile", "demo", "--step", "16", "--out", str(out),
            "--threads", "1", "--max-reps", "10", "-q", *extra]


def _part_rows(parts: Path) -> pd.DataFrame:
    frames = []
    for p in parts.glob("*.parquet"):
        try:
            frames.append(pd.read_parquet(p))
        except Exception:
            pass  # a file appearing mid-listing; the rerun decides what counts
    return pd.concat(frames, ignore_index=True)


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_resume_after_sigkill_loses_nothing_and_measures_nothing_twice(tmp_path):
    out = tmp_path / "demo.parquet"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = parts_dir(out)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("key-*.parquet"))) < 40:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    before = _part_rows(parts)
    assert len(before) >= 40

    rerun = subprocess.run(_cmd(out), capture_output=True, text=True, check=True)
    df, _ = read_lut(out)
    grid = _demo_grid(16)
    assert len(df) == grid == len(_keyset(df))  # every key once
    # the rerun measured exactly the rest (the key in flight at the kill included)...
    assert f"{grid - len(before)} keys measured" in rerun.stdout
    assert f"{len(before)} already there" in rerun.stdout
    # ...and kept what was measured before the kill, untouched
    merged = before.merge(df, on=list(KEY_FIELDS), suffixes=("_before", "_final"))
    assert len(merged) == len(before)
    assert (merged["mean_ms_before"] == merged["mean_ms_final"]).all()
    assert not parts.exists()


def test_max_keys_then_resume(tmp_path):
    out = tmp_path / "lut.parquet"
    cfg = ProfileConfig("demo", out, step=32, max_keys=10, progress=False,
                        timing=TimingConfig(**FAST))
    first = profile_model(cfg)
    assert first.keys_measured == 10 and first.keys_left == first.keys_total - 10
    assert not out.exists() and parts_dir(out).exists()
    cfg.max_keys = None
    second = profile_model(cfg)
    assert second.keys_before == 10 and second.keys_measured == first.keys_total - 10
    assert len(read_lut(out)[0]) == first.keys_total
    done = out.read_bytes()
    assert read_lut(out)[1]["drift"]["key"]  # the machine-speed gauge of the rows' readings
    third = profile_model(cfg)  # nothing left: a no-op that keeps the file, metadata and all
    assert third.keys_measured == 0 and out.read_bytes() == done


def test_shards_and_merge_give_the_same_keys_as_one_run(tmp_path):
    one = profile_model(ProfileConfig("demo", tmp_path / "one.parquet", step=32, progress=False,
                                      timing=TimingConfig(**FAST)))
    shards = []
    for i in range(3):
        r = profile_model(ProfileConfig("demo", tmp_path / "lut.parquet", step=32, shard=(i, 3),
                                        progress=False, timing=TimingConfig(**FAST)))
        assert r.out.name == f"lut.shard-{i}-of-3.parquet"
        shards.append(r.out)
    sets = [_keyset(read_lut(p)[0]) for p in shards]
    assert all(sets) and not (sets[0] & sets[1]) and not (sets[1] & sets[2])
    merged = merge_luts(shards, tmp_path / "merged.parquet")
    assert _keyset(read_lut(merged)[0]) == _keyset(read_lut(one.out)[0])
    assert len(read_lut(merged)[0]) == one.keys_total


@pytest.mark.heavy
@pytest.mark.timeout(300)
def test_torchrun_two_cpu_ranks_profile_disjoint_shards_and_merge(tmp_path):
    out = tmp_path / "dist.parquet"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hwprune", "profile", "demo", "--step", "32", "--threads", "1",
           "--max-reps", "3", "--out", str(out), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=280)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "rank 0 merged all shards" in run.stdout
    df, meta = read_lut(out)
    assert len(df) == _demo_grid(32) == len(_keyset(df))
    assert not list(tmp_path.glob("dist.shard-*"))


def test_weights_mode_is_chosen_by_model_size_and_recorded(tmp_path):
    from hwprune.profiler.device import cache_bytes, cache_guesses

    small = profile_model(ProfileConfig("demo", tmp_path / "demo.parquet", step=64,
                                        progress=False, layers=["fc"],
                                        timing=TimingConfig(**FAST)))
    assert read_lut(small.out)[1]["weights"] == "hot"  # 0.6 MB of weights stay in cache
    assert read_lut(small.out)[1]["cache_guessed"] == cache_guesses("cpu")
    big = profile_model(ProfileConfig("resnet18", tmp_path / "r18.parquet", step=512,
                                      input_size=32, progress=False, layers=["fc"],
                                      timing=TimingConfig(**FAST)))
    meta = read_lut(big.out)[1]
    expected = "cold" if meta["model_weight_bytes"] > cache_bytes("cpu") else "hot"
    assert meta["weights"] == expected and meta["cache_bytes"] == cache_bytes("cpu")
    with pytest.raises(Exception, match="weights 'cold' in the existing table|weights 'hot'"):
        forced = "hot" if expected == "cold" else "cold"
        profile_model(ProfileConfig("resnet18", tmp_path / "r18.parquet", step=512,
                                    input_size=32, progress=False, layers=["fc"],
                                    timing=TimingConfig(**FAST), weights=forced))


def test_an_unreadable_cache_size_is_recorded_as_guessed_and_shown(tmp_path, monkeypatch):
    """The cache size steers cold/hot timing (and a runtime table's blend): where it cannot
    be read, the assumed value is said in the table and by `lut info`, not used silently."""
    from click.testing import CliRunner

    import hwprune.profiler.device as device
    from hwprune.cli import cli

    monkeypatch.setattr(device, "CPU_CACHE_DIR", str(tmp_path / "no-such-dir"))
    assert device.cache_bytes("cpu") == device.ASSUMED_LLC_BYTES
    assert device.core_cache_bytes() == 0
    assert len(device.cache_guesses("cpu", blend=True)) == 2
    res = profile_model(ProfileConfig("demo", tmp_path / "demo.parquet", step=64,
                                      progress=False, layers=["fc"],
                                      timing=TimingConfig(**FAST)))
    meta = read_lut(res.out)[1]
    assert meta["cache_bytes"] == device.ASSUMED_LLC_BYTES
    assert meta["cache_guessed"] == ["last-level cache size unreadable: assumed 32 MiB"]
    info = CliRunner().invoke(cli, ["lut", "info", str(res.out)])
    assert info.exit_code == 0 and \
        "GUESSED  last-level cache size unreadable: assumed 32 MiB" in info.output


def test_time_budget_stops_early_keeps_the_parts_and_a_rerun_finishes(tmp_path):
    out = tmp_path / "demo.parquet"
    cfg = ProfileConfig("demo", out, step=16, timing=TimingConfig(**FAST), progress=False,
                        max_seconds=0.2)
    first = profile_model(cfg)
    # each key writes its own file, so 200 keys take well over 0.2 s
    assert 0 < first.keys_measured < _demo_grid(16)
    assert first.keys_left == _demo_grid(16) - first.keys_measured
    assert not out.exists() and parts_dir(out).exists()
    cfg.max_seconds = None
    second = profile_model(cfg)
    assert second.keys_before == first.keys_measured and second.keys_left == 0 and out.exists()
    assert len(read_lut(out)[0]) == _demo_grid(16)
