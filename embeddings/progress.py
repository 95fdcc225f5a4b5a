"""The embedding job's progress line: frames done, frames/s, ETA and unusable frames, on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """rows/s and ETA on stderr: redrawn in place on a terminal, one line every 10 s otherwise."""

    def __init__(self, total: int, *, enabled: bool, label: str = "embed",
                 on_update: Callable[[int, int], None] | None = None) -> None:
        """`on_update(done, total)` is called on every update (a caller that draws its own progress line)."""
        self.total, self.enabled, self.label, self.on_update = total, enabled, label, on_update
        self.done = self.errors = 0
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def update(self, rows: int, errors: int = 0) -> None:
        self.done += rows
        self.errors += errors
        if self.on_update is not None:
            self.on_update(self.done, self.total)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= (0.5 if self._tty else 10.0) or self.done >= self.total):
            self._last = now
            print(self.line(), file=sys.stderr, end="\r" if self._tty and self.done < self.total else "\n",
                  flush=True)

    def line(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / dt
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta // 60:.0f}m{eta % 60:02.0f}s" if eta != float("inf") else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.done:,}/{self.total:,} frames ({pct:.1f}%) {rate:,.0f} frames/s "
                f"ETA {eta_s}; {self.errors:,} unusable")


__all__ = ["Progress"]
