"""A table's calibration refitted in the same rounds as its validation (``lut validate
--recalibrate``).

A calibration measured minutes before a validation sees another machine: on the 2-core
VM the eight calibration variants of an OpenVINO mobilenet_v2 table sat 3.7% below the
line through the 30 variants validated two minutes later (mean of the eight; -8.1% to
+11.4% over ten such pairs, 2026-11-29), while a fit on eight of the validation's own
variants predicted the other 22 at 1.2-3.3% MAPE in all ten. The shift is the machine's,
not the table's, and no single drift key tracked it (a conv read beside each variant
corrected some runs and worsened others). Measured in the same interleaved rounds, the
calibration variants and the validated ones meet the same machine; the calibration is
still fitted on its own variants only, never on the ones it is scored on. The previous
calibration's agreement, and how much slower or faster its variants ran now than when it
was fitted, stay in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hwprune.luts.calibrate import (CALIBRATION_SEED, CalibrationNets,
                            calibration_nets, calibration_plans, calibration_record, fit_all,
                            require_grid, store_calibration)
from hwprune.luts.lookup import DEFAULT_STAT, Lut
from hwprune.luts.metrics import agreement
from hwprune.luts.variants import lut_step
from hwprune.profiler.table import LutError
from hwprune.profiler.timing import prepare_model

# Calibration variants share the measurement with validation variants of the same
# channel counts: their keys are kept apart.
PREFIX = "calibration "


@dataclass
class Recalibration:
    path: Path
    table: Lut
    model: str
    size: "int | tuple[int, int]"
    seed: int
    stat: str
    cs: CalibrationNets
    previous: dict | None
    record: dict | None = None
    before: dict = field(default_factory=dict)  # tag -> (estimate, held out of previous fit)

    @classmethod
    def build(cls, cfg, lut: Lut, resolved, trace, dims: list, example, size: "int | tuple[int, int]", runtime,
              tc) -> "Recalibration":
        """The calibration variants built (and exported, for a runtime) beside the validation's."""
        if isinstance(cfg.luts, Lut):
            if cfg.luts.in_memory:
                raise LutError("recalibrate stores the new fit in the table's file: this table "
                               "is held in memory only (save it, or pass its path)")
            paths = str(cfg.luts.source).split(", ")
        else:
            paths = list(cfg.luts)
        if len(paths) != 1:
            raise LutError("--recalibrate stores the new fit in the table: give exactly one --lut")
        path = paths[0]
        require_grid(lut, path)
        previous = lut.meta.get("calibration")
        n = len(previous["variants"]) if previous else cfg.calibration_samples
        seed = (previous or {}).get("seed", CALIBRATION_SEED)
        plans = calibration_plans(dims, lut_step(lut), n, seed, path, resolved.name)

        def prepare(tag, net):
            return runtime.add(PREFIX + tag, net) if runtime else prepare_model(net, tc)

        cs = calibration_nets(lut, resolved.module, trace, dims, plans, example, size,
                              resolved.in_channels, prepare)
        return cls(Path(path), lut, resolved.name, size, seed, cfg.stat, cs, previous)

    @property
    def nets(self) -> dict:
        return {PREFIX + t: net for t, net in self.cs.nets.items()}

    def store(self, samples: dict, rows: dict) -> Lut:
        """Fit on the calibration variants' ``samples``, store the fit in the table, and
        return the table as now calibrated. ``rows`` (the validation's, with the previous
        calibration's estimates) are remembered for the report."""
        self.before = {t: (r["estimate_ms"], not r["in_calibration"]) for t, r in rows.items()}
        samples = {t[len(PREFIX):]: v for t, v in samples.items()}
        tags = list(self.cs.nets)
        level = self.table.drift_level_ms
        fits = fit_all(self.cs.sums, samples, self.cs.nets, level, self.cs.n_ops)
        self.record = {**calibration_record(self.model, self.size, self.seed, self.table.runtime,
                                            tags, self.cs.sums, samples, fits, level),
                       "rounds": len(samples[tags[0]][DEFAULT_STAT]),
                       "with_validation": True}
        store_calibration(self.path, self.record)
        return Lut.load(self.path, stat=self.stat)

    def summary(self, df: pd.DataFrame) -> dict:
        """The new fit's variants and rounds; the previous calibration's agreement on the
        variants it was not fitted on, and how its variants' speed moved since."""
        out = {"variants": len(self.record["variants"]), "rounds": self.record["rounds"],
               "previous": None}
        if not self.previous:
            return out
        held = [t for t in df["channels"] if self.before[t][1]]
        meas = df.set_index("channels").loc[held, "measured_ms"].to_numpy()
        prev = {"fitted": self.previous.get("measured"),
                **agreement(np.array([self.before[t][0] for t in held]), meas)}
        then = dict(zip(self.previous.get("variants", []),
                        self.previous.get("measured_raw_ms") or []))
        now = dict(zip(self.record["variants"], self.record["measured_raw_ms"]))
        shared = [t for t in now if t in then]
        if shared:
            # The same networks measured then and now: the machine's own change of speed.
            prev["variants_now_vs_then"] = float(np.median([now[t] / then[t] for t in shared]))
            prev["variants_shared"] = len(shared)
        out["previous"] = prev
        return out


def describe_recalibration(summary: dict | None) -> str | None:
    if not summary:
        return None
    line = (f"recalibrated on {summary['variants']} variants measured in these same rounds "
            f"(stored in the table)")
    p = summary.get("previous")
    if p:
        line += (f"; the previous calibration ({p['fitted']}) gave R2 identity "
                 f"{p['r2_identity']:.3f}, MAPE {100 * p['mape']:.1f}%")
        if p.get("variants_now_vs_then"):
            line += (f", its {p['variants_shared']} variants ran x{p['variants_now_vs_then']:.3f} "
                     f"their latency then")
    return line


__all__ = ["Recalibration", "describe_recalibration"]
