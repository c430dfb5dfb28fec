"""ibrar: train adversarially robust classifiers with the IB-RAR regularizer and evaluate them honestly.

The public surface is small: `hsic`, `tap_layers`, `IBRegularizer`, `ChannelMask`; models, data, training
and evaluation live in their own modules (`ibrar.models`, `ibrar.data`, `ibrar.train`, `ibrar.evaluate`);
`load_pretrained` reads a trained model back from an `ibrar export` folder; `evaluate_model` evaluates any
PyTorch classifier as `ibrar eval` does.
"""

from ibrar.hsic import KernelMatrix, kernel_matrix
from ibrar.hsic import hsic as hsic  # noqa: PLC0414 - the function is the public entry, the module stays importable
from ibrar.mask import ChannelMask
from ibrar.regularizer import IBRegularizer, IBTerms
from ibrar.taps import tap_layers

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `load_pretrained` needs the models, data and methods; importing them only when asked keeps `import ibrar` light.
    if name == "load_pretrained":
        from ibrar.loading import load_pretrained

        return load_pretrained
    if name == "evaluate_model":
        from ibrar.user_model import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'ibrar' has no attribute {name!r}")


__all__ = [
    "ChannelMask",
    "IBRegularizer",
    "IBTerms",
    "KernelMatrix",
    "__version__",
    "evaluate_model",
    "hsic",
    "kernel_matrix",
    "load_pretrained",
    "tap_layers",
]
