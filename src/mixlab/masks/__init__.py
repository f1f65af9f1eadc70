"""Pure mask functions: `(lam, shape, generator, device) -> mask (B, *shape)`.

A mask holds, per position, the fraction taken from the sample itself (x_i);
the rest comes from its partner x_j. They know nothing of labels or models.
"""

from mixlab.masks.box import box
from mixlab.masks.fourier import fourier, low_frequency_noise

__all__ = ["box", "fourier", "low_frequency_noise"]
