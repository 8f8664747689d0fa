"""Reading latency look-up tables: lookups, estimates, the pruner's delta query, validation."""

from hwprune.luts.calibrate import CalibrateConfig, TooFewVariants, calibrate, fit_calibration
from hwprune.luts.delta import LatencyModel, shrink
from hwprune.luts.estimate import Estimate, estimate, estimate_trace
from hwprune.luts.info import ConfigCoverage, LutSummary, format_summary, summarize
from hwprune.luts.lookup import Lut, LutMissError, config_of
from hwprune.luts.metrics import agreement, macs, proxy_agreement
from hwprune.luts.plot import plot_layer
from hwprune.luts.recalibrate import Recalibration, describe_recalibration
from hwprune.luts.validate import ValidateConfig, validate, variant_keys
from hwprune.luts.variants import VariantPlan, build_variant, plan_variants
from hwprune.profiler.table import LutError, merge_luts, read_lut, read_meta

__all__ = ["CalibrateConfig", "TooFewVariants", "calibrate", "fit_calibration", "LatencyModel", "shrink", "Estimate", "estimate", "estimate_trace", "ConfigCoverage",
           "LutSummary", "format_summary", "summarize", "Lut", "LutMissError", "config_of",
           "agreement", "macs", "proxy_agreement", "plot_layer", "Recalibration",
           "describe_recalibration", "ValidateConfig", "validate", "variant_keys",
           "VariantPlan", "build_variant", "plan_variants", "LutError", "merge_luts", "read_lut",
           "read_meta"]
