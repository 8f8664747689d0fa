"""What a synth + prune job will cost on this device, measured before the job.

Each part is timed on the user's own model and device, a few iterations of the real code:
a DeepInversion iteration at the synthesis batch and each phase's resolution
(``synth.synthesize_batch``), and a pruning minibatch (``Pruner.train_interval``: the
student's forward and backward with its gates, the teacher's forward, the update) of the
model as it is and of the model cut to the target. Each is timed at two iteration counts
and the difference kept, so set-up costs drop out. The counts they are multiplied by come
from the configs and from the LUT: the pruning steps are those of an even cut (every
dimension loses groups in turn, the widest relative to its start first) until the LUT
estimate meets the target. A latency-aware run removes the groups that save most and
usually needs fewer steps; the prune time is the steps times the interval's minibatches,
at the mean of the two minibatch times (the student shrinks between them).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from hwprune.luts import LatencyModel
from hwprune.pruner.data import ImageSet
from hwprune.pruner.groups import PrunableDim, build_graph, remove_channels
from hwprune.pruner.finetune import FineTuneConfig
from hwprune.pruner.schedule import PruneConfig, Pruner
from hwprune.synth.deepinversion import DIConfig, synthesize_batch
from hwprune.sizes import Size, canonical, hw, size_text

PROBE = (1, 3)  # iteration counts timed; their difference is what one iteration costs


@dataclass
class JobCost:
    synth_iteration_s: dict          # {'16' or '16x32': seconds per DeepInversion iteration}
    synth_batches: int
    synth_s: float
    minibatch_s: float               # one pruning minibatch of the model as it is
    minibatch_at_target_s: float     # ... of the model cut to the target (even cut)
    prune_steps: int | None          # None without a target
    prune_s: float | None
    finetune_s: float

    @property
    def total_s(self) -> float:
        return self.synth_s + (self.prune_s or 0.0) + self.finetune_s

    def as_dict(self) -> dict:
        return {**asdict(self), "total_s": self.total_s}


def _per_iteration(run, counts: tuple[int, int] = PROBE) -> float:
    """Seconds per iteration of ``run(n)`` (which does n iterations), set-up excluded."""
    run(counts[0])  # warm-up: allocators, kernels chosen, caches filled
    times = []
    for n in counts:
        t0 = time.perf_counter()
        run(n)
        times.append(time.perf_counter() - t0)
    return max(0.0, (times[1] - times[0]) / (counts[1] - counts[0]))


def time_synth_iteration(teacher: nn.Module, di: DIConfig, batch: int, size: Size,
                         channels: int, num_classes: int) -> dict[int, float]:
    """Seconds per DeepInversion iteration at ``batch`` images, at each phase's resolution."""
    targets = torch.arange(batch) % num_classes
    full = hw(size)
    low = canonical([max(1, s // di.low_res_factor) for s in full])
    sizes = ([low] if di.low_res_iterations else []) + [canonical(size)]
    out = {}
    for res in sizes:
        cfg = di.with_(low_res_iterations=0, log_every=1_000_000)

        def run(n: int, res: Size = res, cfg: DIConfig = cfg) -> None:
            synthesize_batch(teacher, targets, cfg.with_(iterations=n), res, channels,
                             torch.Generator().manual_seed(0))

        out[size_text(res, "")] = _per_iteration(run)
    return out


def time_minibatch(student: nn.Module, teacher: nn.Module, prune: PruneConfig, size: Size,
                   channels: int) -> float:
    """Seconds per pruning minibatch of ``student`` (a copy is trained, the model is not)."""
    student = copy.deepcopy(student)
    for prm in student.parameters():  # a teacher's copy may come frozen
        prm.requires_grad_(True)
    cfg = PruneConfig(criterion="taylor", target_ratio=0.5, batch_size=prune.batch_size,
                      temperature=prune.temperature, loss="kl")
    pruner = Pruner(student, teacher, cfg, size, channels, None)
    pruner.data = ImageSet(torch.randn(prune.batch_size, channels, *hw(size)))

    def run(n: int) -> None:
        pruner.cfg.interval = n
        pruner.gates.install()
        try:
            pruner.train_interval()
        finally:
            pruner.gates.remove()

    return _per_iteration(run)


def even_cut(latency: LatencyModel, dims: list[PrunableDim], group: int,
             target_ms: float) -> list[int]:
    """Removals (dimension indices into ``dims``, one group each) of an even cut until the
    LUT estimate is at most ``target_ms``; stops at the floor."""
    model = copy.deepcopy(latency)
    start = {j: d.channels for j, d in enumerate(dims)}
    left = dict(start)
    removals: list[int] = []
    while model.total_ms > target_ms:
        open_ = [j for j in left if left[j] > group]
        if not open_:
            break
        j = max(open_, key=lambda i: (left[i] / start[i], left[i]))
        model.remove(dims[j].lut_dim, group)
        left[j] -= group
        removals.append(j)
    return removals


def cut_model(model: nn.Module, dims: list[PrunableDim], removals: list[int], group: int,
              size: Size, channels: int) -> nn.Module:
    """A copy of ``model`` with ``removals`` applied physically (the last channels of each),
    on the model's device (cut on the CPU, where the dependency graph is traced)."""
    device = next(model.parameters()).device
    model = copy.deepcopy(model).cpu()
    graph = build_graph(model, torch.zeros(1, channels, *hw(size)))
    mine = [copy.copy(d) for d in dims]
    for j in set(removals):
        k = removals.count(j) * group
        remove_channels(model, graph, mine[j], list(range(mine[j].channels - k,
                                                          mine[j].channels)))
    return model.to(device)


def job_cost(teacher: nn.Module, latency: LatencyModel, dims: list[PrunableDim], size: Size,
             channels: int, num_classes: int, n_images: int, synth_batch: int, di: DIConfig,
             prune: PruneConfig, finetune: FineTuneConfig,
             target_ms: float | None) -> JobCost:
    """The time plan of ``synth`` (``n_images`` at ``synth_batch`` with ``di``) and of
    ``prune`` to ``target_ms`` then ``finetune`` (module docstring)."""
    teacher = teacher.eval()
    per_iter = time_synth_iteration(teacher, di, min(synth_batch, n_images), size, channels,
                                    num_classes)
    batches = math.ceil(n_images / synth_batch)
    phase_iters = ([di.low_res_iterations] if di.low_res_iterations else []) + [di.iterations]
    synth_s = batches * sum(n * t for n, t in zip(phase_iters, per_iter.values()))
    full = time_minibatch(teacher, teacher, prune, size, channels)
    steps = prune_s = None
    at_target = full
    if target_ms is not None:
        removals = even_cut(latency, dims, prune.group_size, target_ms)
        steps = math.ceil(len(removals) / prune.groups_per_step)
        if removals:
            student = cut_model(teacher, dims, removals, prune.group_size, size, channels)
            at_target = time_minibatch(student, teacher, prune, size, channels)
        # the student shrinks from the teacher's size to the target's through the steps
        prune_s = steps * prune.interval * (full + at_target) / 2
    per_epoch = math.ceil(n_images / finetune.batch_size)
    finetune_s = finetune.epochs * per_epoch * at_target
    return JobCost(per_iter, batches, synth_s, full, at_target, steps, prune_s, finetune_s)


__all__ = ["JobCost", "job_cost", "even_cut", "cut_model", "time_minibatch",
           "time_synth_iteration"]
