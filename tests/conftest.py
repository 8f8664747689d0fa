import pytest
import torch


@pytest.fixture(autouse=True)
def _small_threads():
    # Tests share 2 cores with everything else; keep torch from oversubscribing.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits():
    from zoo.digits import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory, digits):
    """A small BatchNorm/residual teacher really trained on the embedded digits."""
    from zoo import build_demo, save_checkpoint
    from zoo.digits import accuracy, train_classifier

    # One thread, as every test (the autouse fixture above, which session fixtures do not
    # see): on a shared 2-core machine two OpenMP threads spinning against the other load
    # took 6 to 15 times the CPU time of one (12 epochs: 151 s of CPU against 19 s, 0.90).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the initial weights: unseeded, one draw in ~5 missed the 0.85 below
    net = train_classifier(build_demo(width=16), digits.x_train, digits.y_train, epochs=12)
    torch.set_num_threads(old)
    assert accuracy(net, digits.x_test, digits.y_test) > 0.85
    return save_checkpoint(net, tmp_path_factory.mktemp("teacher") / "demo.pt", "demo",
                           {"width": 16})


@pytest.fixture(scope="session")
def demo_lut(tmp_path_factory):
    """A real (fast, low-repetition) CPU LUT of the demo net at step 32."""
    from profiler import ProfileConfig, TimingConfig, profile_model

    out = tmp_path_factory.mktemp("lut") / "demo.parquet"
    profile_model(ProfileConfig("demo", out, step=32, progress=False,
                                timing=TimingConfig(max_reps=5, warmup=1, threads=1)))
    return out
