"""Every torchvision classifier with BatchNorm and convolutions goes through what `profile`,
`lut validate` and `prune` need, or is refused with one of the project's own errors.

The list is torchvision's own (``zoo.torchvision_model_names``, as in
``benchmarks/torchvision_coverage.py``), so a new classifier is walked automatically.
Cheap on purpose: a small input, a coarse step, no timing; the table is a stand-in holding
exactly the model's scan grid, so a key a pruned variant needs but the grid lacks fails
the strict estimate. The benchmark script also times every operator kind and trains a
pruned model for a step.
"""

import copy
import re

import pandas as pd
import pytest
import torch

from hwprune.luts import Lut, LutError, build_variant, estimate_trace, macs, plan_variants
from hwprune.profiler import KeySpaceError, scan_keys, trace_model
from hwprune.profiler.coupling import dimensions
from hwprune.pruner import GroupError, build_graph, check_matches, find_dims
from hwprune.zoo import ModelError, resolve_model, torchvision_model_names
from hwprune.zoo.models import classifier_scope, small_input_size

CLEAN = (ModelError, KeySpaceError, LutError, GroupError)  # the CLI prints these on one line
STEP = 128
# What each model gave on 2026-12 (torchvision 0.29): a refusal must name its cause.
# (maxvit_t was refused for its layer_norm and einsum until they were keyed as exact calls.)
REFUSED = {"shufflenet_v2_x0_5": "channel shuffle", "shufflenet_v2_x1_0": "channel shuffle",
           "shufflenet_v2_x1_5": "channel shuffle", "shufflenet_v2_x2_0": "channel shuffle"}


def _params(name: str) -> float:
    """Parameter count from torchvision's weight metadata (no model built), else 0."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name)
        return float(next(iter(weights)).meta["num_params"])
    except (ValueError, KeyError, StopIteration):
        return 0.0


def _family(name: str) -> str:
    """resnet18 -> resnet, efficientnet_v2_s -> efficientnet_v2, regnet_y_8gf -> regnet_y."""
    family = re.match(r"[a-z]+(?:_v\d)?(?:_[xy](?=_))?", name).group(0)
    return family + "_bn" if name.endswith("_bn") else family


def _cases() -> list:
    """Every classifier; all but the smallest of each family are marked slow (densenet201
    alone takes 10 s here: its Torch-Pruning graphs follow hundreds of concatenations)."""
    names = torchvision_model_names()
    smallest: dict[str, str] = {}
    for name in sorted(names, key=_params):
        smallest.setdefault(_family(name), name)
    return [pytest.param(name, id=name, marks=[] if smallest[_family(name)] == name
                         else [pytest.mark.slow]) for name in names]


def _stand_in(keys) -> Lut:
    rows = [{**k.as_dict(), "mean_ms": 1e-3 + macs(k) * 1e-8, "median_ms": 0.0, "min_ms": 0.0}
            for k in keys]
    return Lut(pd.DataFrame(rows), {}, source="<stand-in>")


def _walk(name: str) -> None:
    resolved = resolve_model(name)
    model, size = resolved.module, small_input_size(name, 32)
    trace = trace_model(model, size, resolved.in_channels)
    lut = _stand_in(scan_keys(trace, STEP))
    estimate_trace(trace, lut, strict=True)
    dims = dimensions(trace.layers, trace.frozen_dims)
    example = torch.randn(1, resolved.in_channels, size, size)
    plans = plan_variants(dims, STEP, 2)  # original and, where there is one, extreme-min
    net = build_variant(model, trace, dims, plans[-1].channels, example)
    estimate_trace(trace_model(net, size, resolved.in_channels), lut, strict=True)
    student = copy.deepcopy(model)
    groups = find_dims(student, build_graph(student, example), trace)
    check_matches(groups, trace)


@pytest.mark.parametrize("name", _cases())
def test_classifier_works_or_is_refused_cleanly(name, request):
    # tests/conftest.py runs slow tests unless deselected: these only when asked for.
    if request.node.get_closest_marker("slow") and \
            "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a larger member of its family: run with -m slow")
    reason, _ = classifier_scope(name)
    if reason:
        pytest.skip(f"out of scope: {reason}")
    if name in REFUSED:
        with pytest.raises(CLEAN, match=REFUSED[name]):
            _walk(name)
        return
    try:
        _walk(name)
    except CLEAN as exc:  # a new refusal: fine if clean, but it must be listed above
        pytest.fail(f"{name} is refused ({type(exc).__name__}: {exc}); if that is right, "
                    f"add it to REFUSED")
