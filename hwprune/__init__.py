"""hwprune: make a trained CNN meet a latency budget on a given device, without its training data.

    import hwprune
    model = hwprune.wrap(net, input_size=64)
    lut = hwprune.profile(model, "lut.parquet")
    result = hwprune.prune(model, hwprune.synthesize(model), lut, target_measured_ratio=0.7)

The calls live in ``hwprune.api`` (loaded on first use, so that ``import hwprune`` stays
light); the parts are ``hwprune.profiler``, ``hwprune.luts``, ``hwprune.synth``,
``hwprune.pruner`` and ``hwprune.zoo``.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

from hwprune.errors import HwpruneError  # noqa: E402,F401 - re-exported, after the version

# The subpackages profiler, luts, pruner and synth live in top-level folders of the
# repository; an install maps them under this package (setup.cfg's package_dir). A source
# checkout run without installing (a benchmark copied to a lent GPU machine) finds them
# beside this folder instead: only there, where the repository's setup.cfg says so.
_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / "setup.cfg").is_file() and (_ROOT / "profiler" / "__init__.py").is_file():
    __path__.append(str(_ROOT))  # noqa: F821 - a package's own __path__


_API = ("Model", "PruneResult", "wrap", "load", "save", "profile", "validate", "plan",
        "synthesize", "prune")


def __getattr__(name: str):
    if name in _API:
        from hwprune import api

        return getattr(api, name)
    raise AttributeError(f"module 'hwprune' has no attribute '{name}'")
