"""The console scripts. Importing this package (which every ``rb-*`` entry point does before torch) makes
OpenMP's waiting threads sleep instead of spin unless the user chose otherwise: it only takes effect if set
before torch starts its thread pool. See ``_threads``."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # = _threads.WAIT_POLICY (not imported: keep this first)
