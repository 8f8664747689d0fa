import pytest

from profiler import ProfileConfig, TimingConfig, profile_model


@pytest.fixture(scope="session")
def demo_lut(tmp_path_factory):
    """A real (fast, low-repetition) CPU LUT of the demo net at step 32."""
    out = tmp_path_factory.mktemp("lut") / "demo.parquet"
    profile_model(ProfileConfig("demo", out, step=32, progress=False,
                                timing=TimingConfig(max_reps=5, warmup=1, threads=1)))
    return out
