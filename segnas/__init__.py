"""segnas: neural architecture search for compact, fast semantic-segmentation networks."""

import os

# How long torch's OpenMP (libgomp) threads spin before they sleep between parallel regions, set
# before torch loads it (BENCHMARKS.md, "OpenMP wait policy"; measured on cpu-2, 2026-12-07):
# - libgomp's own 300,000 spins turn every small op into a ~30 ms stall as soon as another
#   process wants the same cores (a 57x slower step beside one busy process);
# - a passive wait (0 spins: every region wakes a sleeping thread) made the main job's training
#   and supernet steps 2x slower on 2 otherwise idle cores, because its ops are small and the
#   gaps between them short;
# - 3,000 spins (~0.1 ms here) bridge those gaps: the idle-core speed of a busy-wait, 1.6x a
#   passive wait's step beside a second 2-thread process (1,000 spins: 1.15x, but at the edge
#   of the gaps on idle cores). Processes that share cores should share out threads instead
#   (Lightning does for DDP ranks, the test suite for its workers).
# A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
#: The environment variables that set libgomp's wait.
OPENMP_WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
if not any(key in os.environ for key in OPENMP_WAIT_KEYS):
    os.environ["GOMP_SPINCOUNT"] = "3000"

__version__ = "0.1.0"
