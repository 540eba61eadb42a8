"""How every command-line entry point ends: `sys.exit(run_entry(job, *args))`.

    exit 0     the job finished
    exit 2     bad input (foundation.errors.UserError): `error: <one line>` on stderr, nothing damaged
    exit 130   Ctrl-C, at any moment (start-up imports included): one line saying what was kept
    exit 143   SIGTERM (what SLURM sends before preempting a job): handled as Ctrl-C is, one line

Anything else is a bug and keeps its traceback. With several processes (torchrun, accelerate launch)
they fail alike, and only rank 0 says so. This module imports nothing heavy, so that a Ctrl-C while torch
is still being imported is caught here too: entry points import their job's modules inside `job`.
"""
from __future__ import annotations

import os
import signal
import sys

from foundation.errors import UserError

SIGINT_STATUS, SIGTERM_STATUS = 130, 143


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a job, with the line that says what was kept (and the exit status)."""

    def __init__(self, message: str, status: int = SIGINT_STATUS):
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM, so the job unwinds as it does on Ctrl-C."""


def signal_name(interrupt: KeyboardInterrupt) -> tuple[str, int]:
    """('terminated (SIGTERM)', 143) or ('interrupted', 130): how a job was stopped and its exit status."""
    terminated = isinstance(interrupt, Terminated) or getattr(interrupt, "status", None) == SIGTERM_STATUS
    return ("terminated (SIGTERM)", SIGTERM_STATUS) if terminated else ("interrupted", SIGINT_STATUS)


def _raise_terminated(signum, frame):
    raise Terminated()


def run_entry(job, *args) -> int:
    first = int(os.environ.get("RANK", "0")) == 0
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        job(*args)
    except UserError as e:
        if first:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how, status = signal_name(e)
        if first:
            print(str(e) if isinstance(e, Interrupted) else f"{how}; the same command starts again (work already "
                  "saved is kept)", file=sys.stderr)
        return getattr(e, "status", status)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
