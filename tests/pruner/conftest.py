import pytest

from hwprune.profiler import ProfileConfig, TimingConfig, profile_model
from tests.conftest import shared_file


@pytest.fixture(scope="session")
def teacher_lut(tmp_path_factory, teacher_ckpt):
    """A real, fast CPU LUT of the width-16 digits teacher at step 8 (the tests' group size)."""
    def make(path):
        profile_model(ProfileConfig(str(teacher_ckpt), path, step=8, progress=False,
                                    timing=TimingConfig(max_reps=5, warmup=1, threads=1)))
        return path

    return shared_file(tmp_path_factory, "teacher-s8.parquet", make)


@pytest.fixture(scope="session")
def teacher_cuda_lut(tmp_path_factory, teacher_ckpt):
    """The same teacher's LUT on CUDA, in graph mode as the GPU LUTs are made (64 keys, a few
    seconds). Batch 256, so that a layer's time follows its channels: at batch 1 a 32 px
    layer is all launch overhead and pruning could not lower the estimate."""
    out = tmp_path_factory.mktemp("plut_cuda") / "teacher-cuda.parquet"
    profile_model(ProfileConfig(str(teacher_ckpt), out, step=8, progress=False,
                                timing=TimingConfig(device="cuda", mode="graph", batch=256,
                                                    max_reps=5, warmup=1)))
    return out


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> str:
    """Where the student is pruned and fine-tuned; cuda runs only where CUDA is seen."""
    return request.param


@pytest.fixture
def device_lut(device, request):
    """A LUT of the teacher measured on ``device``, as a job there would be given."""
    return request.getfixturevalue("teacher_lut" if device == "cpu" else "teacher_cuda_lut")
