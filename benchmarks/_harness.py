"""Shared measurement helpers for the benchmarks: timing, peak memory, bandwidth, tables."""
from __future__ import annotations

import ctypes
import gc
import os
import statistics
import threading
import time
from typing import Callable

import torch

_LIBC = ctypes.CDLL("libc.so.6") if os.path.exists("/proc/self/statm") else None
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


class PeakMemory:
    """Peak resident memory above the baseline while the block runs (sampled every 0.2 ms)."""

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.0002)

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, rss_bytes())
        self._stop.set()
        self._thread.join()

    @property
    def mib(self) -> float:
        return (self.peak - self.baseline) / 2**20


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last output."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def read_bandwidth_gbs(n_bytes: int = 512 * 2**20, repeats: int = 7) -> float:
    """Sustained read bandwidth (GB/s) of this process's threads: a sum over a large float32 array."""
    x = torch.ones(n_bytes // 4, dtype=torch.float32)
    t, _ = median_time(lambda: x.sum(), repeats)
    return n_bytes / t / 1e9


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            if v != v:
                return "–"
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def update_results(path: str, section: str, body: str) -> None:
    """Replace (or append) the ``## section`` block of ``path`` with ``body``."""
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    marker = f"## {section}\n"
    block = marker + body.rstrip() + "\n\n"
    if marker in text:
        start = text.index(marker)
        nxt = text.find("\n## ", start + len(marker))
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + block + text[end:]
    else:
        text = text.rstrip() + "\n\n" + block
    with open(path, "w") as fh:
        fh.write(text.rstrip() + "\n")
