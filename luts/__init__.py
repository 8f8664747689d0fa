"""Reading latency look-up tables: summaries now; estimation and validation build on this."""

from luts.info import ConfigCoverage, LutSummary, format_summary, summarize
from profiler.table import LutError, merge_luts, read_lut, read_meta

__all__ = ["ConfigCoverage", "LutSummary", "LutError", "format_summary", "merge_luts",
           "read_lut", "read_meta", "summarize"]
