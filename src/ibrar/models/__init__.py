"""Image classifiers that declare their IB layers, robust layers and last conv layer, behind one registry.

Importing the model modules below is what registers them.
"""

from ibrar.models.registry import InputNormalization, create_model, list_models, register_model
from ibrar.models.resnet import ResNet, resnet18
from ibrar.models.small import SmallCNN, small_cnn
from ibrar.models.vgg import VGG, vgg16
from ibrar.models.wide_resnet import WideResNet, wide_resnet, wrn28_10, wrn34_10

__all__ = [
    "VGG",
    "InputNormalization",
    "ResNet",
    "SmallCNN",
    "WideResNet",
    "create_model",
    "list_models",
    "register_model",
    "resnet18",
    "small_cnn",
    "vgg16",
    "wide_resnet",
    "wrn28_10",
    "wrn34_10",
]
