"""Describe the machine a table is measured on, for the LUT's metadata."""

from __future__ import annotations

import platform
import socket
import subprocess

import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    except (OSError, subprocess.SubprocessError):
        return None


def describe_device(device: str, index: int = 0) -> dict:
    """Name and software versions of ``device`` ('cpu' or 'cuda')."""
    info = {
        "device_kind": device,
        "host": socket.gethostname(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "driver": None,
        "cpu": cpu_name(),
    }
    if device == "cuda":
        info["device_name"] = torch.cuda.get_device_name(index)
        cap = torch.cuda.get_device_capability(index)
        info["compute_capability"] = f"{cap[0]}.{cap[1]}"
        info["driver"] = _nvidia_driver()
    else:
        info["device_name"] = info["cpu"]
    return info


def core_cache_bytes() -> int:
    """Size of the CPU's level-2 cache (each core's own on most CPUs), 0 when unknown."""
    import os

    base = CPU_CACHE_DIR
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            with open(f"{base}/{entry}/level") as f, open(f"{base}/{entry}/type") as t:
                if int(f.read()) != 2 or t.read().strip() == "Instruction":
                    continue
            with open(f"{base}/{entry}/size") as f:
                text = f.read().strip()
            units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
            return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    except (OSError, ValueError):
        pass
    return 0


# Where Linux describes the first CPU's caches (a module attribute: tests point it elsewhere).
CPU_CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"
# What ``cache_bytes`` assumes for a CPU whose caches it cannot read (a common L3 size; the
# development VM's own). Recorded as a guess in the table (``cache_guesses``).
ASSUMED_LLC_BYTES = 32 << 20


def cache_bytes(device: str, index: int = 0) -> int:
    """Size of the last-level cache that weights compete for (CPU L3, or the GPU's L2);
    ``ASSUMED_LLC_BYTES`` for a CPU whose caches cannot be read."""
    return _read_llc(device, index) or (0 if device == "cuda" else ASSUMED_LLC_BYTES)


def cache_guesses(device: str, index: int = 0, blend: bool = False) -> list[str]:
    """The cache facts a table's cold/hot timing rests on that could not be read and were
    assumed instead (empty when all were read); ``blend``: the per-core cache too (runtime
    tables blend hot and cold timings by it)."""
    guesses = []
    if not _read_llc(device, index):
        guesses.append("GPU L2 size unreadable: taken as 0 (weights timed hot)" if
                       device == "cuda" else
                       f"last-level cache size unreadable: assumed "
                       f"{ASSUMED_LLC_BYTES >> 20} MiB")
    if blend and not core_cache_bytes():
        guesses.append("per-core (L2) cache size unreadable: taken as 0 (every network "
                       "blended toward its cold timings)")
    return guesses


def _read_llc(device: str, index: int = 0) -> int:
    """The last-level cache's size as the device reports it, 0 when it cannot be read."""
    if device == "cuda":
        return int(getattr(torch.cuda.get_device_properties(index), "L2_cache_size", 0))
    best = (0, 0)
    base = CPU_CACHE_DIR
    try:
        import os

        for entry in os.listdir(base):
            if not entry.startswith("index"):
                continue
            with open(f"{base}/{entry}/level") as f:
                level = int(f.read())
            with open(f"{base}/{entry}/size") as f:
                text = f.read().strip()
            units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
            size = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
            best = max(best, (level, size))
    except (OSError, ValueError):
        pass
    return best[1]
