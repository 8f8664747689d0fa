"""Click options shared by several commands."""

from __future__ import annotations

from typing import Callable

import click

from zoo.runtimes import RUNTIMES


def lut_runtime(runtime: str | None, luts) -> str:
    """``--runtime`` as given, else the runtime the (first) LUT was timed in, else torch."""
    if runtime or not luts:
        return runtime or "torch"
    from luts import read_meta
    from profiler.table import runtime_identity

    return runtime_identity(read_meta(list(luts)[0])).split(" ")[0]


def runtime_options(what: str, mismatch: str) -> Callable:
    """``--runtime`` (where ``what`` is measured) and ``--allow-mismatch`` (``mismatch``)."""
    def apply(f: Callable) -> Callable:
        f = click.option("--allow-mismatch", is_flag=True, help=mismatch)(f)
        return click.option(
            "--runtime", type=click.Choice(RUNTIMES), default=None,
            help=f"Measure {what} in this runtime (CPU; exported, checked against PyTorch "
                 f"and loaded once) [default: the runtime the LUT was timed in, torch "
                 f"without a LUT]. A LUT timed in another runtime is refused unless "
                 f"--allow-mismatch.")(f)
    return apply
