"""Progress of a long job: a tqdm bar on a terminal, plain periodic lines in a log.

A bar redraws itself with carriage returns; redirected to a file or CI output that is a
megabyte of frames. When stdout is not a terminal, `Progress` prints one plain line every
`every_s` seconds instead (and nothing per step), so a log reads like a log.
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

LOG_EVERY_S = 30.0  # seconds between two progress lines in a log
BAR_EVERY_STEPS = 10  # steps between two updates of the bar's figures (reading them syncs with the device)


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "step", *, enabled: bool = True, initial: int = 0,
                 unit_scale: bool = False, every_s: float = LOG_EVERY_S, terminal: bool | None = None):
        self.total, self.desc, self.unit, self.count = total, desc, unit, initial
        self.enabled, self.every_s = enabled, every_s
        terminal = sys.stdout.isatty() if terminal is None else terminal
        self.bar = (tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, leave=False,
                         dynamic_ncols=True) if enabled and terminal else None)
        self.started = self.last_line = time.perf_counter()
        self.first = initial

    def update(self, n: int = 1) -> bool:
        """Advance by n; True when the caller should hand its figures to `show` now."""
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
            return self.count % BAR_EVERY_STEPS == 0 or self.count == self.total
        return self.enabled and time.perf_counter() - self.last_line >= self.every_s and self.count < self.total

    def show(self, **figures) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**figures)
            return
        now = time.perf_counter()
        self.last_line = now
        rate = (self.count - self.first) / max(now - self.started, 1e-9)
        eta = (self.total - self.count) / rate if rate > 0 else float("nan")
        extra = "".join(f"  {k} {v}" for k, v in figures.items())
        print(f"{self.desc}  {self.count}/{self.total} {self.unit}{extra}  {rate:.1f} {self.unit}/s  "
              f"eta {eta / 60:.1f} min", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
