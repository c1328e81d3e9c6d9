"""Training any built network: the LightningModule, its schedules and checkpoint loading."""

from segnas.training.checkpoint import load_network
from segnas.training.module import SegmentationModule

__all__ = ["SegmentationModule", "load_network"]
