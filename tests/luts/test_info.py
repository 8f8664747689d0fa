from hwprune.profiler import ProfileConfig, TimingConfig, profile_model, read_lut, write_lut
from hwprune.luts import format_summary, summarize


def test_coverage_counts_the_rows_of_each_config(tmp_path):
    out = tmp_path / "demo.parquet"
    profile_model(ProfileConfig("demo", out, step=32, progress=False,
                                timing=TimingConfig(max_reps=3, warmup=1, threads=1)))
    full = summarize(out)
    assert full.rows == sum(full.rows_per_op.values())
    assert all(c.coverage == 1.0 for c in full.configs)
    by_layer = {c.layers[0]: c for c in full.configs}
    assert by_layer["block2.conv2.0"].grid == 4 * 4  # 128 -> {32, 64, 96, 128} both sides
    assert by_layer["block1.conv1.0"].layers == ["block1.conv1.0", "block1.conv2.0"]

    df, meta = read_lut(out)
    dropped = (df["op"] == "conv2d") & (df["c_in"] == 128) & (df["c_out"] == 128)
    partial = write_lut(df[~dropped], meta, tmp_path / "partial.parquet")
    s = {c.layers[0]: c for c in summarize(partial).configs}
    assert s["block2.conv2.0"].measured == 15
    text = format_summary(summarize(partial))
    assert "block2.conv2.0" in text and "94%" in text and "timing   fp32, batch 1" in text
    assert "runtime  torch" in text


def test_info_says_which_cold_rows_kept_weights_cached(demo_lut, tmp_path):
    from hwprune.profiler.keyspace import KEY_FIELDS
    from hwprune.profiler.ops import MAX_WEIGHT_COPIES, weight_bytes
    from hwprune.profiler.table import key_of_row

    df, meta = read_lut(demo_lut)
    assert "graph_calls" in meta["protocol"] and meta["max_weight_copies"] == MAX_WEIGHT_COPIES
    assert summarize(demo_lut).cold_shortfall is None  # a hot table: nothing to say
    cold = 64 << 20
    keys = [key_of_row(r) for r in df[list(KEY_FIELDS)].to_dict("records")]
    sizes = [weight_bytes(k, "fp32") for k in keys]
    # The cap leaves a key's copies under `cold` exactly when 512 copies of it are smaller.
    short = sum(0 < b and b * MAX_WEIGHT_COPIES < cold for b in sizes)
    assert 0 < short < sum(b > 0 for b in sizes)  # the demo has both kinds at 64 MiB
    path = write_lut(df, {**meta, "weights": "cold", "cold_bytes": cold}, tmp_path / "c.parquet")
    s = summarize(path)
    assert s.cold_shortfall == (short, sum(b > 0 for b in sizes))
    text = format_summary(s)
    assert f"{short} of {s.cold_shortfall[1]} rows with weights" in text and "128 KiB" in text
    assert "measured before a graph captured" not in text  # an eager table

    # A cold graph-mode table from before graph_calls: its small keys were timed hot.
    # (Graph mode is CUDA's: a cpu table in graph mode is refused on reading.)
    old = {**meta, "weights": "cold", "timing_mode": "graph", "cache_bytes": cold // 2,
           "device_kind": "cuda", "threads": None,
           "protocol": {k: v for k, v in meta["protocol"].items() if k != "graph_calls"}}
    old.pop("cold_bytes", None)
    text = format_summary(summarize(write_lut(df, old, tmp_path / "old.parquet")))
    assert "measured before a graph captured every weight copy" in text and "3.2 MiB" in text
