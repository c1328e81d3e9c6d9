"""User-facing errors.

Each one names the file or config key at fault and what was expected, so that the entry point
can print it as one line instead of a traceback.
"""


class SegnasError(Exception):
    """Base class for errors caused by the user's input rather than by a bug."""


class ConfigError(SegnasError):
    """A config key is missing, malformed or inconsistent."""


class DatasetError(SegnasError):
    """A dataset folder, split file, image or mask is missing or malformed."""


class GenotypeError(SegnasError):
    """A genotype file is malformed or belongs to another search space."""


class WeightsError(SegnasError):
    """Pretrained weights were asked for but cannot be had."""
