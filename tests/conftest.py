import os
from pathlib import Path
from typing import Callable

import pytest
import torch
from filelock import FileLock


@pytest.fixture(autouse=True)
def _small_threads():
    # Tests share 2 cores with everything else; keep torch from oversubscribing.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pytest_collection_modifyitems(config, items):
    # The longest tests first (a stable sort keeps the rest in file order): started last,
    # one of them kept a single worker busy for a minute after the other had finished.
    items.sort(key=lambda item: "heavy" not in item.keywords)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def only_when_asked(request, seconds: int) -> None:
    """Skip unless the run selects slow tests (``-m slow``): marked slow tests otherwise
    run unless deselected (tests/zoo/test_torchvision_coverage.py), and these would take
    `make test` past its minutes."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip(f"about {seconds} s on 2 cores: run with -m slow")


def shared_file(tmp_path_factory, name: str, make: Callable[[Path], Path]) -> Path:
    """``make(path)`` once per test run, even under pytest-xdist: the workers of one run share
    the parent of their temp dirs, and the first to take the lock builds the file for all."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's dir; without xdist the parent holds every past run
    path = root / "shared" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            made = make(path)
            assert Path(made) == path, (made, path)
    return path


@pytest.fixture(scope="session")
def digits():
    from hwprune.zoo.digits import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory, digits):
    """A small BatchNorm/residual teacher really trained on the embedded digits."""
    from hwprune.zoo import build_demo, save_checkpoint
    from hwprune.zoo.digits import accuracy, train_classifier

    def make(path: Path) -> Path:
        # One thread, as every test (the autouse fixture above, which session fixtures do not
        # see): on a shared 2-core machine two OpenMP threads spinning against the other load
        # took 6 to 15 times the CPU time of one.
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        # Batches of 32 at lr 0.1 without shifts, as the demo's teacher: 93-95% held-out in
        # 9 s over seeds 0-3, where 12 epochs of 64 with shifts gave 90% in 23 s.
        torch.manual_seed(0)
        net = train_classifier(build_demo(width=16), digits.x_train, digits.y_train, epochs=6,
                               batch=32, lr=0.1, augment=False)
        torch.set_num_threads(old)
        assert accuracy(net, digits.x_test, digits.y_test) > 0.85
        return save_checkpoint(net, path, "demo", {"width": 16})

    return shared_file(tmp_path_factory, "teacher-demo.pt", make)


@pytest.fixture(scope="session")
def demo_lut(tmp_path_factory):
    """A real (fast, low-repetition) CPU LUT of the demo net at step 32."""
    from hwprune.profiler import ProfileConfig, TimingConfig, profile_model

    def make(path: Path) -> Path:
        profile_model(ProfileConfig("demo", path, step=32, progress=False,
                                    timing=TimingConfig(max_reps=5, warmup=1, threads=1)))
        return path

    return shared_file(tmp_path_factory, "demo.parquet", make)


_SUMMARIES: list[str] = []


def pytest_runtest_logreport(report):
    # user_properties travel from xdist workers to the controller with each report
    if report.when == "call":
        _SUMMARIES.extend(v for k, v in report.user_properties if k == "summary")


def pytest_terminal_summary(terminalreporter):
    """What tests asked to show whatever the verbosity (e.g. how many corruptions the
    property-based tests tried), recorded with ``record_property("summary", text)``."""
    if _SUMMARIES:
        terminalreporter.section("test summaries")
        for line in _SUMMARIES:
            terminalreporter.write_line(line)
