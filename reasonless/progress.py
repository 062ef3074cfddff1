"""A dependency-free progress bar for long jobs: examples done, rate, ETA, on stderr."""
from __future__ import annotations

import math
import sys
import time


def clock(seconds: float) -> str:
    """H:MM:SS of a duration, rounded to the second; "?" when unknown (an ETA before any progress)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total: int, unit: str = "examples", enabled: bool = True, stream=None, min_interval: float = 0.25):
        self.total, self.unit, self.enabled = total, unit, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.min_interval = min_interval
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        # Off a terminal, print one line per update instead of redrawing (logs stay readable).
        if self.enabled and (not self.tty or now - self.last >= self.min_interval or self.done >= self.total):
            self.last = now
            self._draw(now)

    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.t0, 1e-9)

    def _draw(self, now: float) -> None:
        elapsed = now - self.t0
        rate = self.done / max(elapsed, 1e-9)
        frac = self.done / self.total if self.total else 1.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        bar = "#" * int(30 * frac)
        line = (f"[{bar:<30}] {self.done:,}/{self.total:,} {self.unit} "
                f"{rate:,.0f}/s elapsed {elapsed:.1f}s eta {eta:.1f}s")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
