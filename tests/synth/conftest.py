import pytest
import torch

from zoo import build_demo, save_checkpoint
from zoo.digits import accuracy, load_digits, train_classifier


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory, digits):
    """A small BatchNorm/residual teacher really trained on the embedded digits."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    net = train_classifier(build_demo(width=16), digits.x_train, digits.y_train, epochs=12)
    torch.set_num_threads(old)
    assert accuracy(net, digits.x_test, digits.y_test) > 0.85
    return save_checkpoint(net, tmp_path_factory.mktemp("teacher") / "demo.pt", "demo",
                           {"width": 16})
