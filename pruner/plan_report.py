"""A plan (``pruner.plan``) for people: the terminal table and the figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwprune.profiler.clock import fmt_seconds
from hwprune.pruner.plan import EDGE_FACTOR, Plan, Reach
from hwprune.zoo.atomic import atomic_write_bytes
from hwprune.sizes import size_text

TOP_LAYERS = 12  # operators listed on the terminal (plan.json holds all)
TOP_STAIRS = 3   # dimensions whose curves the figure draws


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def reach_lines(r: Reach, group_size: int) -> list[str]:
    how = "calibrated in-network" if r.calibrated else "operator sum"
    lines = [f"reach: estimate now {r.now_ms:.3f} ms ({how}); floor {r.floor_ms:.3f} ms with "
             f"every prunable dimension at its last group of {group_size}; at most "
             f"{r.max_speedup:.2f}x faster"]
    if r.floor_ms >= r.now_ms:
        # seen on a busy 2-core VM with a 20-repetition table of a tiny model: the smallest
        # configurations timed slower than the full ones
        lines.append("the table sees no saving: the floor is not below the estimate now, so its "
                     "noise exceeds what pruning removes here; profile with more repetitions")
    if r.target_ms is not None:
        if r.target_ms >= r.now_ms:
            verdict = f"not below the estimate now ({r.now_ms:.3f} ms): nothing to prune"
        elif r.reachable:
            verdict = (f"reachable, {r.margin_ms:.3f} ms above the floor "
                       f"({r.now_ms / r.target_ms:.2f}x of the {r.max_speedup:.2f}x possible)")
        else:
            verdict = f"out of reach: {-r.margin_ms:.3f} ms below the floor"
        lines.append(f"target {r.target_ms:.3f} ms ({r.target_from}): {verdict}")
    return lines


def format_plan(plan: Plan, top: int = TOP_LAYERS) -> str:
    d = plan.as_dict()
    lines = [f"{plan.model} @ {size_text(plan.input_size)}, LUT {plan.lut}", *reach_lines(plan.reach, plan.group_size), ""]
    layers = sorted(d["layers"], key=lambda x: -x["ms"])
    lines.append(f"where the time goes: LUT latency vs multiply-adds, the {min(top, len(layers))}"
                 f" slowest of {len(layers)} operators (plan.json has all)")
    lines.append(f"  {'operator':28s} {'op':18s} {'ms':>8s} {'latency':>8s} {'FLOPs':>7s} "
                 f"{'floor ms':>9s}")
    for x in layers[:top]:
        tag = "" if x["prunable"] else "  (untouched)"
        lines.append(f"  {x['name'][:28]:28s} {x['op'][:18]:18s} {x['ms']:8.3f} "
                     f"{_pct(x['latency_share']):>8s} {_pct(x['flops_share']):>7s} "
                     f"{x['floor_ms']:9.3f}{tag}")
    total = sum(x["ms"] for x in layers)
    floor = sum(x["floor_ms"] for x in layers)
    lines.append(f"  operators no pruning touches: {plan.untouched_ms:.3f} ms "
                 f"({100 * plan.untouched_ms / total:.0f}% of the operator sum); at the floor "
                 f"every operator together still takes {floor:.3f} ms "
                 f"({100 * floor / total:.0f}%): the part pruning cannot remove")
    if plan.sparse:
        lines += ["", "staircase: not available: the table holds only the keys of validation "
                  "variants (profile --for-validation); the reach above is from their exact keys "
                  "(the original, and every dimension at its smallest)"]
        return "\n".join(lines)
    lines += ["", f"staircase: a removal of {plan.group_size} channels is free when it saves "
              f"under {100 * plan.noise:g}% of the latency of the operators its dimension "
              f"touches; an edge saves at least that and {EDGE_FACTOR:g}x the dimension's "
              f"median saving",
              f"  {'dimension':28s} {'channels':>8s} {'to floor ms':>11s} {'free':>7s} "
              f"{'width':>6s}  edges (channel counts whose removal saves)"]
    for s in sorted(plan.stairs, key=lambda s: -s.saving_ms):
        n = len(s.savings_ms)
        width = "-" if s.step_width is None else str(s.step_width)
        edges = ", ".join(map(str, s.edges[:8])) + (" ..." if len(s.edges) > 8 else "")
        slower = f"; {s.slower} of the free make it slower" if s.slower else ""
        lines.append(f"  {s.root[:28]:28s} {s.channels:8d} {s.saving_ms:11.3f} "
                     f"{s.free:3d}/{n:<3d} {width:>6s}  {edges or '-'}{slower}")
    return "\n".join(lines)


def cost_lines(cost: dict, device: str) -> list[str]:
    """The time plan (``pruner.job_cost.JobCost.as_dict``), measured on ``device``."""
    its = ", ".join(f"{1e3 * t:.0f} ms at {r}px" for r, t in cost["synth_iteration_s"].items())
    lines = [f"time plan on {device} (each part timed for a few iterations here):",
             f"  synth   {fmt_seconds(cost['synth_s']):>8s}  {cost['synth_batches']} batches; one "
             f"DeepInversion iteration {its}"]
    if cost["prune_steps"] is not None:
        lines.append(f"  prune   {fmt_seconds(cost['prune_s']):>8s}  about {cost['prune_steps']} steps "
                     f"(an even cut to the target; a latency-aware run usually needs fewer); "
                     f"minibatch {1e3 * cost['minibatch_s']:.0f} ms now, "
                     f"{1e3 * cost['minibatch_at_target_s']:.0f} ms at the target")
    else:
        lines.append(f"  prune   (no target given: minibatch {1e3 * cost['minibatch_s']:.0f} ms)")
    lines.append(f"  fine-tune {fmt_seconds(cost['finetune_s']):>6s}")
    lines.append(f"  total   {fmt_seconds(cost['total_s']):>8s}")
    return lines


def plot_plan(plan: Plan, path: Path, top: int = TOP_LAYERS) -> Path:
    """Latency share vs FLOPs share of the slowest operators, and the staircase curves of
    the dimensions that save the most."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = plan.as_dict()
    layers = sorted(d["layers"], key=lambda x: -x["ms"])[:top]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    y = np.arange(len(layers))
    a.barh(y - 0.2, [100 * x["latency_share"] for x in layers], 0.4, label="LUT latency")
    a.barh(y + 0.2, [100 * x["flops_share"] for x in layers], 0.4, label="multiply-adds")
    a.set_yticks(y, [x["name"] for x in layers], fontsize=7)
    a.invert_yaxis()
    a.set_xlabel("share of the network (%)")
    a.set_title("where the time goes")
    a.legend()
    if not plan.stairs:
        b.text(0.5, 0.5, "no staircase: the table holds only validation keys",
               ha="center", transform=b.transAxes)
    for s in sorted(plan.stairs, key=lambda s: -s.saving_ms)[:TOP_STAIRS]:
        line, = b.step(s.counts, s.total_ms, where="post", label=f"{s.root} ({s.channels})")
        edge_ms = [t for c, t in zip(s.counts, s.total_ms) if c in s.edges]
        b.plot([c for c in s.counts if c in s.edges], edge_ms, "o", color=line.get_color())
    b.set_xlabel("channels left in the dimension (others as now)")
    b.set_ylabel("network estimate (ms)")
    b.set_title(f"staircase, one group of {plan.group_size} at a time (dots: edges)")
    b.invert_xaxis()
    if plan.stairs:
        b.legend(fontsize=7)
    fig.suptitle(f"{plan.model} @ {size_text(plan.input_size)}: now {plan.reach.now_ms:.3f} ms, floor "
                 f"{plan.reach.floor_ms:.3f} ms", fontsize=10)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


__all__ = ["format_plan", "plot_plan", "reach_lines", "cost_lines"]
