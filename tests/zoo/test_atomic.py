"""The shared atomic write: kept files get the umask's mode (mkstemp alone makes 0600, which
other users of a shared results directory could not read), and a failed write leaves the old
file and no temp file. Checkpoints and LUTs both go through it."""

import os
import stat
import threading

import pytest

from hwprune.profiler.table import write_lut
from hwprune.zoo import DemoNet, save_checkpoint
from hwprune.zoo.atomic import atomic_write_bytes

META = {"device_kind": "cpu", "device_name": "Test CPU", "dtype": "fp32", "batch": 1,
        "memory_format": "contiguous", "timing_mode": "eager", "algos": "auto", "threads": 1}


@pytest.fixture
def umask():
    old = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)
    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_kept_files_get_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    want = 0o666 & ~mask
    assert _mode(atomic_write_bytes(tmp_path / "a.bin", lambda f: f.write(b"x"))) == want
    ckpt = save_checkpoint(DemoNet(width=8), tmp_path / "sub" / "demo.pt", "demo", {"width": 8})
    assert _mode(ckpt) == want
    assert _mode(write_lut([], META, tmp_path / "t.parquet")) == want
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = atomic_write_bytes(tmp_path / "a.bin", lambda f: f.write(b"old"))

    def half_then_fail(f):
        f.write(b"new, half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_bytes(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_checkpoint_that_cannot_be_pickled_leaves_nothing(tmp_path):
    # torch.save fails inside the shared write, part way through: a lock cannot be pickled.
    with pytest.raises(TypeError, match="pickle"):
        save_checkpoint(DemoNet(width=8), tmp_path / "demo.pt", "demo", {"width": 8},
                        lock=threading.Lock())
    assert not list(tmp_path.iterdir())
