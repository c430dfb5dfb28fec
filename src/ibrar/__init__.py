"""ibrar: train adversarially robust classifiers with the IB-RAR regularizer and evaluate them honestly.

The public surface is small: `hsic`, `tap_layers`, `IBRegularizer`, `ChannelMask`; models, data, training
and evaluation live in their own modules (`ibrar.models`, `ibrar.data`, `ibrar.train`, `ibrar.evaluate`).
"""

from ibrar.hsic import KernelMatrix, kernel_matrix
from ibrar.hsic import hsic as hsic  # noqa: PLC0414 - the function is the public entry, the module stays importable
from ibrar.mask import ChannelMask
from ibrar.regularizer import IBRegularizer, IBTerms
from ibrar.taps import tap_layers

__version__ = "0.1.0"

__all__ = [
    "ChannelMask",
    "IBRegularizer",
    "IBTerms",
    "KernelMatrix",
    "__version__",
    "hsic",
    "kernel_matrix",
    "tap_layers",
]
