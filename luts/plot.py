"""Heat map of one conv config's latency over (c_in, c_out): where the hardware's tile steps show."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hwprune.luts.lookup import Lut, config_of, describe_config
from hwprune.profiler.keyspace import OpKey
from hwprune.profiler.table import LutError, atomic_write_bytes


def layer_config(lut: Lut, layer: str) -> OpKey:
    """The original key of ``layer`` as recorded in the LUT's metadata."""
    for c in lut.meta.get("configs", []):
        if layer in c["layers"]:
            return OpKey(**c["key"])
    convs = [n for c in lut.meta.get("configs", []) if c["key"]["op"] == "conv2d"
             for n in c["layers"]]
    raise LutError(f"LUT {lut.source} has no layer '{layer}' (conv layers: "
                   f"{', '.join(convs[:8])}{' ...' if len(convs) > 8 else ''})")


def plot_layer(lut: Lut, layer: str, out: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = layer_config(lut, layer)
    grid = lut.grid(key)
    if grid is None:
        raise LutError(f"layer '{layer}' ({key.op}) has no 2-D (c_in, c_out) grid to plot")
    rows, cols, ms = grid
    fig, ax = plt.subplots(figsize=(7, 5.5))
    mesh = ax.pcolormesh(_edges(cols), _edges(rows), np.ma.masked_invalid(ms), cmap="viridis",
                         shading="flat")
    fig.colorbar(mesh, ax=ax, label=f"latency ({lut.stat.replace('_ms', '')}, ms)")
    ax.set(xlabel="c_out", ylabel="c_in",
           title=f"{layer}: {describe_config(config_of(key))}\n{lut.meta.get('device_name')}, "
                 f"{lut.meta.get('dtype')}, batch {lut.meta.get('batch')}")
    fig.tight_layout()
    path = Path(out)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return path


def _edges(centers: np.ndarray) -> np.ndarray:
    c = centers.astype(float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[:-1] + c[1:]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
