"""The encoder: architectures (EfficientNet-Lite0, ResNet), preprocessing, ensembles.

- :mod:`~simclr_watches.model.lite0`: EfficientNet-Lite0 in plain torch, with timm's parameter names.
- :mod:`~simclr_watches.model.encoder`: a backbone and its pooled, L2-normalised embedding.
- :mod:`~simclr_watches.model.pooling`: generalised-mean (GeM) pooling, an alternative to the average.
- :mod:`~simclr_watches.model.preprocessing`: how an image becomes the encoder's input.
- :mod:`~simclr_watches.model.ensemble`: several encoders as one (output-space ensemble).
- :mod:`~simclr_watches.model.fold`: BatchNorm folded into the convolutions, for inference.
"""

from simclr_watches.model.encoder import ARCH_DIMS, Encoder, create_backbone, shared_stages
from simclr_watches.model.ensemble import EnsembleEncoder
from simclr_watches.model.fold import fold_batchnorm
from simclr_watches.model.preprocessing import Preprocessing, default_preprocessing

__all__ = ["ARCH_DIMS", "Encoder", "EnsembleEncoder", "Preprocessing", "create_backbone", "default_preprocessing",
           "fold_batchnorm", "shared_stages"]
