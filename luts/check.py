"""Check a LUT file received from elsewhere: the rules every read applies
(``profiler.check``), and optionally whether it answers a given model.

The coverage check estimates the unpruned model (every operator must be answered) and
counts how much of the model's pruning grid the table holds: the pruner needs all of it,
an estimate of the model as it is only its own keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hwprune.luts.estimate import estimate_trace
from hwprune.luts.lookup import Lut, table_input_size
from hwprune.sizes import Size, canonical, size_text
from hwprune.profiler.keyspace import scan_keys, trace_model
from hwprune.profiler.table import LutError, key_of_row


@dataclass
class CheckResult:
    path: str
    ok: bool
    message: str        # one line: what passed, or the error


@dataclass
class Coverage:
    model: str
    input_size: Size
    operators: int      # operators of the unpruned model, all answered
    interpolated: int   # of those, answered by interpolation
    estimate_ms: float
    step: int | None    # the table's scan step for this model, None when it has no source
    grid_keys: int      # keys of the model's pruning grid at that step
    grid_present: int   # of those, rows in the table

    def describe(self) -> str:
        grid = ("no scan of this model recorded, pruning grid not checked" if self.step is None
                else f"pruning grid at step {self.step}: {self.grid_present}/{self.grid_keys} "
                     "keys" + ("" if self.grid_present == self.grid_keys
                               else " (estimates only: the pruner needs the whole grid)"))
        return (f"{self.model} @ {size_text(self.input_size)}: {self.operators} operators answered "
                f"({self.interpolated} interpolated), estimate {self.estimate_ms:.3f} ms; {grid}")


def coverage(lut: Lut, model: str, input_size: Size | None = None) -> Coverage:
    """How far ``lut`` covers ``model``; a LutError (naming the layer) when it cannot
    estimate the model as it is."""
    from hwprune.zoo import resolve_model

    resolved = resolve_model(model)
    sources = [s for s in lut.meta.get("sources", []) if s.get("model") == resolved.name]
    size = table_input_size(lut.meta, resolved.name, input_size, resolved.input_size)
    trace = trace_model(resolved.module, size, resolved.in_channels)
    est = estimate_trace(trace, lut)
    step = next((int(s["step"]) for s in sources
                 if s.get("input_size") and canonical(s["input_size"]) == size), None)
    grid = scan_keys(trace, step) if step else []
    present = {key_of_row(r) for r in lut.rows.to_dict("records")}
    return Coverage(resolved.name, size, len(est.layers), est.interpolated, est.total_ms, step,
                    len(grid), sum(k in present for k in grid))


def check_file(path: str | os.PathLike, model: str | None = None,
               input_size: Size | None = None) -> CheckResult:
    """Read ``path`` under every load rule and, given ``model``, check it answers it."""
    from hwprune.zoo import ModelError

    try:
        lut = Lut.load(path)
        summary = f"{path}: ok, {len(lut.rows)} rows, {lut.meta['device_kind']} " \
                  f"{lut.meta['dtype']} batch {lut.meta['batch']}"
        if model is not None:
            summary += "; " + coverage(lut, model, input_size).describe()
    except (LutError, ModelError) as exc:
        return CheckResult(str(path), False, f"error: {exc}")
    return CheckResult(str(path), True, summary)
