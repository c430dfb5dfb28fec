"""A user's own code named on the command line or in a config (`package.module:name` or `path/to/file.py:name`),
imported and built here so that `ibrar eval --model` and `model.name` find and check it the same way."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

from ibrar.errors import InputError


class ModelSpecError(InputError):
    """A ``--model``, ``--weights`` or model output that ibrar cannot use; the message says what to do."""


def import_callable(spec: str, option: str = "--model") -> Any:
    """``package.module:name`` (importable, or from the current folder) or ``path/to/file.py:name``; `option`
    is what the errors call the setting that gave it (``--model``, ``model.name``)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ModelSpecError(f"{option}: expected MODULE:CALLABLE (e.g. torchvision.models:resnet18 or "
                             f"mymodels.py:build), got {spec!r}")
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"{option}: {path} is not a file; give MODULE:CALLABLE or path/to/file.py:CALLABLE")
        loader = importlib.util.spec_from_file_location(f"ibrar_user_model_{path.stem}", path)
        if loader is None or loader.loader is None:
            raise ModelSpecError(f"{option}: {path} cannot be imported as a Python file")
        module = importlib.util.module_from_spec(loader)
        sys.modules[loader.name] = module
        loader.loader.exec_module(module)
    else:
        added = "" not in sys.path and str(Path.cwd()) not in sys.path
        if added:  # `ibrar` as a console script does not see the current folder; a user's module lives there
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ModelSpecError(f"{option}: cannot import {module_name!r} ({err}); give an importable module "
                                 "or a path/to/file.py") from None
        finally:
            if added:
                sys.path.remove(str(Path.cwd()))
    if not hasattr(module, attr):
        raise ModelSpecError(f"{option}: {module_name} has no {attr!r}")
    return getattr(module, attr)


def build_module(spec: str, kwargs: dict[str, Any], option: str = "--model",
                 arguments: str = "--model-kwargs") -> nn.Module:
    """The model `spec` builds from `kwargs`, checked to be callable and to return an nn.Module; `arguments`
    names where the keywords came from, for the advice when the builder does not take them."""
    build = import_callable(spec, option)
    if not callable(build):
        raise ModelSpecError(f"{option}: {spec} is not callable")
    try:
        model = build(**kwargs)
    except TypeError as err:  # most often a keyword the builder does not take, or one it needs and did not get
        raise ModelSpecError(f"{option}: {spec}(**{kwargs}) raised TypeError: {err}; check {arguments} "
                             "against the arguments it takes") from err
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"{option}: {spec}(...) returned {type(model).__name__}, not a torch.nn.Module")
    return model
