"""The console scripts. Importing this package (which every ``rb-*`` entry point does before torch) bounds how
long OpenMP's idle threads spin before they sleep, unless the user chose a wait policy or a spin count: it only
takes effect if set before torch starts its thread pool. See ``_threads``."""

import os

from .._threads import SPIN_COUNT  # standard library only: torch is not imported yet

# GNU OpenMP (torch's x86 pool) spins 300,000 rounds by default before sleeping: beside busy processes the waiting
# threads steal the cores their peers need (ACTIVE: 3.9x slower, default 2.7x beside 2 busy processes on 2 cores),
# while PASSIVE (sleep at once) costs 1.9x on a quiet machine. 10,000 rounds keeps the quiet speed and slows
# 2.4x beside them, where the fair share is 2x (docs/performance.md, shared cores).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
