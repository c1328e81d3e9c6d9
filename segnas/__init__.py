"""segnas: neural architecture search for compact, fast semantic-segmentation networks."""

import os

# libgomp's default busy-wait turns every small op into a ~30 ms stall as soon as another
# process (a dataloader worker, a second DDP rank, a browser) wants the same cores: measured
# 100x slower training steps on a 2-core machine. Passive waiting costs little when the cores
# are free. Set before torch loads OpenMP; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
