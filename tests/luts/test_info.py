from profiler import ProfileConfig, TimingConfig, profile_model, read_lut, write_lut
from luts import format_summary, summarize


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
