"""A fast subset of ``benchmarks/timm_coverage.py``: timm members through every stage of the
whole job (trace, a few timed keys, estimate, a pruned variant measured, the pruner's
groups, DeepInversion steps, save and reload in a fresh process, ONNX export), or refused
naming the operator. The benchmark walks every timm family; this runs three."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import timm_coverage  # noqa: E402
from tests.conftest import only_when_asked  # noqa: E402

ARGS = argparse.Namespace(input_size=64, step=64, max_keys=2, max_reps=3, no_profile=False)


@pytest.mark.heavy
@pytest.mark.parametrize("family,name", [("resnet", "resnet10t"), pytest.param(
    "ghostnet", "ghostnet_050", marks=pytest.mark.slow)])
def test_a_timm_member_goes_through_the_whole_job(family, name, tmp_path, request):
    if family != "resnet":
        only_when_asked(request, 12)  # the full survey (benchmarks/timm_coverage.py) has it
    rec = timm_coverage.survey(family, name, ARGS, tmp_path)
    assert rec["outcome"] == "works", timm_coverage.tvc.failed(rec, timm_coverage.ALL_STAGES)
    assert rec["save"]["max_abs_diff"] <= 1e-5 and rec["save"]["pruned_layers"] > 0
    assert rec["variant"]["params_m"] < rec["params_m"]


@pytest.mark.heavy
def test_an_attention_member_goes_through_the_whole_job_with_its_attention_held_fixed(tmp_path):
    """MobileViT: LayerNorm, Linear over tokens and scaled_dot_product_attention are keyed
    as exact calls (profiler.calls) and never pruned; its convolutional parts shrink."""
    rec = timm_coverage.survey("mobilevit", "mobilevit_xxs", ARGS, tmp_path)
    assert rec["outcome"] == "works", timm_coverage.tvc.failed(rec, timm_coverage.ALL_STAGES)
    ops = rec["trace"]["ops"]
    assert ops["call:F.scaled_dot_product_attention"] == 9 and ops["call:F.layer_norm"] == 21
    assert rec["save"]["max_abs_diff"] <= 1e-5 and rec["save"]["pruned_layers"] > 0
    assert rec["variant"]["params_m"] < rec["params_m"]
