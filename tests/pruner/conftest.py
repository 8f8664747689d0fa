import pytest

from profiler import ProfileConfig, TimingConfig, profile_model


@pytest.fixture(scope="session")
def teacher_lut(tmp_path_factory, teacher_ckpt):
    """A real, fast CPU LUT of the width-16 digits teacher at step 8 (the tests' group size)."""
    out = tmp_path_factory.mktemp("plut") / "teacher.parquet"
    profile_model(ProfileConfig(str(teacher_ckpt), out, step=8, progress=False,
                                timing=TimingConfig(max_reps=5, warmup=1, threads=1)))
    return out
