"""DeepInversion image synthesis from the teacher alone (knows nothing of pruning)."""

from hwprune.synth.dataset import DatasetWriter
from hwprune.synth.deepinversion import (PRESETS, BatchResult, DIConfig, FeatureTarget, SynthError,
                                 bn_targets, real_feature_targets, synthesize_batch)
from hwprune.synth.losses import BNStatsHook, competition, js_divergence, l2_prior, tv_l1, tv_l2
from hwprune.synth.run import SynthConfig, preset, rank_device, synthesize, targets_for
from hwprune.synth.step import ImageStepper, autocast_dtype

__all__ = ["DatasetWriter", "PRESETS", "BatchResult", "DIConfig", "FeatureTarget",
           "SynthError", "bn_targets", "real_feature_targets", "synthesize_batch",
           "BNStatsHook", "competition", "js_divergence", "l2_prior", "tv_l1", "tv_l2",
           "SynthConfig", "preset", "rank_device", "synthesize", "targets_for", "ImageStepper",
           "autocast_dtype"]
