"""AugMix: the augmentation operations, the mixing, and the Jensen-Shannon consistency loss."""

from .loss import jsd_loss
from .mixing import AugMixDataset, augment_and_mix
from .ops import DEFAULT_OPS, EXTRA_OPS, OpDraw, apply_op, magnitude, sample_op

__all__ = ["DEFAULT_OPS", "EXTRA_OPS", "AugMixDataset", "OpDraw", "apply_op", "augment_and_mix", "jsd_loss",
           "magnitude", "sample_op"]
