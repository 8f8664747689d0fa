"""The optimiser across a physical removal: its momentum must shrink with the weights.

Torch-Pruning replaces each pruned parameter by a smaller one and slices ``.grad``
along with it. Parking each momentum buffer in ``.grad`` during the removal therefore
gets it sliced with exactly the same indices, for every layer the group touches,
without knowing which layers those are.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


def make_sgd(model: nn.Module, cfg) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


@contextmanager
def carry_momentum(model: nn.Module, opt: torch.optim.SGD
                   ) -> Iterator[Callable[[], torch.optim.SGD]]:
    """Inside the block, remove channels; then call the yielded function for a new SGD over
    the new parameters whose momentum buffers are the old ones, sliced."""
    if not isinstance(opt, torch.optim.SGD):
        raise TypeError("carrying optimiser state through a removal is implemented for SGD")
    for p in model.parameters():
        buf = opt.state.get(p, {}).get("momentum_buffer")
        p.grad = None if buf is None else buf.detach().clone()
    accepted = inspect.signature(torch.optim.SGD).parameters
    group = {k: v for k, v in opt.param_groups[0].items() if k in accepted and k != "params"}

    def rebuild() -> torch.optim.SGD:
        new = torch.optim.SGD(model.parameters(), **group)
        for p in model.parameters():
            if p.grad is not None:
                new.state[p]["momentum_buffer"] = p.grad.detach().clone()
                p.grad = None
        return new

    try:
        yield rebuild
    except BaseException:
        for p in model.parameters():
            p.grad = None
        raise


__all__ = ["make_sgd", "carry_momentum"]
