"""AugMix: the operation table (:mod:`.ops`, one row per op: magnitude, Pillow kernel, batched kernel in
:mod:`.kernels`), the mixing (:mod:`.mixing`, per image), the batched device path (:mod:`.batched`), and the
Jensen-Shannon consistency loss (:mod:`.loss`). Imports run one way: kernels <- ops <- batched <- mixing."""

from .loss import jsd_loss
from .mixing import AugMixDataset, augment_and_mix
from .ops import DEFAULT_OPS, EXTRA_OPS, OP_TABLE, OPS, Op, OpDraw, apply_op, magnitude, sample_op

__all__ = ["DEFAULT_OPS", "EXTRA_OPS", "OPS", "OP_TABLE", "AugMixDataset", "Op", "OpDraw", "apply_op",
           "augment_and_mix", "jsd_loss", "magnitude", "sample_op"]
