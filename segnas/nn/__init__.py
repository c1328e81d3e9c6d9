"""Building blocks every space shares.

Imports nothing of segnas above it except ``segnas.errors`` and ``segnas.offline_weights``
(leaves that import no torch).
"""

from segnas.nn.aspp import ASPP, ImagePooling, conv_bn_relu
from segnas.nn.backbones import build_backbone, read_state_dict, unknown_backbone_message
from segnas.nn.deeplab import DeepLabV3Plus, DeepLabV3PlusDecoder

__all__ = [
    "ASPP",
    "DeepLabV3Plus",
    "DeepLabV3PlusDecoder",
    "ImagePooling",
    "build_backbone",
    "conv_bn_relu",
    "read_state_dict",
    "unknown_backbone_message",
]
