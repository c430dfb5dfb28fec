"""Catch host–device synchronisation inside a block of code (the training step must have none).

On CUDA, `torch.cuda.set_sync_debug_mode("error")` is the real check: every operation that waits for the
GPU raises. The CPU has no such mode, so a stand-in catches the Python-level calls that would wait on a GPU
(`.item()`, `bool(t)`, `.tolist()`, `.cpu()`, `.nonzero()`, boolean-mask indexing, ...) wherever they are
called from. It misses syncs hidden inside C++ operators; it lets tests and CPU users find the common ones.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

# Tensor methods that read a tensor's values on the host (on CUDA each waits for the device).
_READS = ("item", "tolist", "numpy", "cpu", "nonzero", "unique", "masked_select",
          "__bool__", "__int__", "__float__", "__index__")
_FUNCTIONS = ("nonzero", "unique", "masked_select")

_state: dict[str, Any] = {"depth": 0, "allowed": 0, "watched": None}
_TORCH_DIR = Path(torch.__file__).parent
_COMPILER_DIRS = tuple(str(_TORCH_DIR / sub) for sub in ("_dynamo", "_inductor", "_functorch", "fx"))


class HostSyncError(RuntimeError):
    """A host–device synchronisation happened where none is allowed."""


def _outside_torch_frame() -> str:
    """'file:line in function' of the innermost caller that is not PyTorch itself."""
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(str(_TORCH_DIR)) and frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "inside PyTorch"


def _in_compiler() -> bool:
    """torch.compile reads tensors while it traces and compiles: that is compilation, not the step."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(_COMPILER_DIRS):
            return True
        frame = frame.f_back
    return False


def _watched(tensor: object) -> bool:
    return (isinstance(tensor, Tensor) and _state["allowed"] == 0
            and tensor.device.type == _state["watched"] and tensor.device.type != "meta" and not _in_compiler())


def _guard(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if args and _watched(args[0]):
            raise HostSyncError(
                f"host-device synchronisation: {name} on a {args[0].device.type} tensor at "
                f"{_outside_torch_frame()}. Keep values on the device (accumulate them, read them once per "
                f"epoch), or wrap a deliberate host read in ibrar.host_sync.sync_allowed()")
        return original(*args, **kwargs)

    guarded.__wrapped__ = original  # type: ignore[attr-defined]
    return guarded


def _guard_getitem(original: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(self: Tensor, index: Any) -> Any:
        parts = index if isinstance(index, tuple) else (index,)
        if _watched(self) and any(isinstance(p, Tensor) and p.dtype == torch.bool for p in parts):
            raise HostSyncError(
                f"host-device synchronisation: indexing with a boolean mask (its size depends on the values) "
                f"at {_outside_torch_frame()}. Use torch.where or multiply by the mask instead")
        return original(self, index)

    guarded.__wrapped__ = original  # type: ignore[attr-defined]
    return guarded


@contextlib.contextmanager
def _python_level_guard(device_type: str) -> Iterator[None]:
    if _state["depth"]:  # nested: the outer guard is already in place
        yield
        return
    saved_methods = {name: getattr(Tensor, name) for name in _READS + ("__getitem__",)}
    saved_functions = {name: getattr(torch, name) for name in _FUNCTIONS}
    _state.update(depth=1, watched=device_type)
    try:
        for name in _READS:
            setattr(Tensor, name, _guard(f"Tensor.{name}", saved_methods[name]))
        Tensor.__getitem__ = _guard_getitem(saved_methods["__getitem__"])
        for name in _FUNCTIONS:
            setattr(torch, name, _guard(f"torch.{name}", saved_functions[name]))
        yield
    finally:
        for name, method in saved_methods.items():
            setattr(Tensor, name, method)
        for name, function in saved_functions.items():
            setattr(torch, name, function)
        _state.update(depth=0, watched=None)


@contextlib.contextmanager
def forbid_host_sync(device: torch.device | str) -> Iterator[None]:
    """Raise HostSyncError at the first synchronisation of `device` inside the block.

    CUDA: PyTorch's sync debug mode ("error") plus the Python-level guard. CPU: the Python-level guard alone,
    as a stand-in for the GPU (on a CPU nothing actually waits).
    """
    device = torch.device(device)
    with _python_level_guard(device.type):
        if device.type != "cuda":
            yield
            return
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        except RuntimeError as error:
            if isinstance(error, HostSyncError) or "synchroniz" not in str(error):
                raise
            raise HostSyncError(f"host-device synchronisation in the CUDA step: {error}") from error
        finally:
            torch.cuda.set_sync_debug_mode(previous)


@contextlib.contextmanager
def sync_allowed() -> Iterator[None]:
    """A deliberate host read inside a forbid_host_sync block (e.g. of a tensor that lives on the host)."""
    cuda_mode = torch.cuda.get_sync_debug_mode() if torch.cuda.is_available() else 0
    _state["allowed"] += 1
    if cuda_mode:
        torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        _state["allowed"] -= 1
        if cuda_mode:
            torch.cuda.set_sync_debug_mode(cuda_mode)
