"""The profiler's own error, in a module of its own: ``profiler.table`` (which reads and
writes tables) and ``profiler.check`` (the rules a table read must pass) both raise it, and
neither may import the other at module level without an import cycle."""

from hwprune.errors import HwpruneError


class LutError(HwpruneError):
    """A LUT file is unreadable, malformed, or does not match what it is used with."""
