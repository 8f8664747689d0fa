"""Click options shared by several commands."""

from __future__ import annotations

from typing import Callable

import click

from zoo.runtimes import RUNTIMES


def runtime_options(what: str, mismatch: str) -> Callable:
    """``--runtime`` (where ``what`` is measured) and ``--allow-mismatch`` (``mismatch``)."""
    def apply(f: Callable) -> Callable:
        f = click.option("--allow-mismatch", is_flag=True, help=mismatch)(f)
        return click.option(
            "--runtime", type=click.Choice(RUNTIMES), default="torch", show_default=True,
            help=f"Measure {what} in this runtime (CPU; exported, checked against PyTorch "
                 f"and loaded once). A LUT timed in another runtime is refused unless "
                 f"--allow-mismatch.")(f)
    return apply
