"""Profile a device: the operator key space of a model, timed, stored as a Parquet LUT."""

from hwprune.profiler.keyspace import (KEY_FIELDS, KeySpaceError, LayerRecord, OpKey, Trace,
                               channel_grid, grid_for, scan_keys, trace_model, unique_layers)
from hwprune.profiler.ops import build_op
from hwprune.profiler.run import (ProfileConfig, ProfileError, ProfileResult, parse_shard,
                          profile_model, shard_path)
from hwprune.profiler.store import PartStore
from hwprune.profiler.table import (SCHEMA_VERSION, LutError, merge_luts, read_lut, read_meta,
                            write_lut)
from hwprune.profiler.timing import Stats, TimingConfig, TimingError, measure_key, time_callable

__all__ = [
    "KEY_FIELDS", "KeySpaceError", "LayerRecord", "OpKey", "Trace", "channel_grid", "grid_for",
    "scan_keys", "trace_model", "unique_layers", "build_op", "ProfileConfig", "ProfileError",
    "ProfileResult", "parse_shard", "profile_model", "shard_path", "PartStore",
    "SCHEMA_VERSION", "LutError", "merge_luts", "read_lut", "read_meta", "write_lut", "Stats",
    "TimingConfig", "TimingError", "measure_key", "time_callable",
]
