"""Importing this module leaves a mark: a test proves a refused checkpoint never imports it."""

import os
from pathlib import Path

mark = os.environ.get("HWPRUNE_TEST_IMPORT_MARK")
if mark:
    Path(mark).write_text("imported")


def build(**kwargs):  # pragma: no cover - must never run in the test
    raise AssertionError("a builder the caller did not name was called")
