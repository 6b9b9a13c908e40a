"""Restricted unpickling for files from the internet.

Only numpy arrays, numpy dtypes/scalars and builtin containers are admitted; any other
global (``os.system``, ``builtins.eval``, ...) raises ``UnsafePickleError`` before it is
called, so a malicious pickle has no side effect. ``load_mbm_checkpoint`` additionally maps
the unknown config class of the published MBM ``sub-XX.pth`` files to a plain namespace.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "list"),
    ("builtins", "dict"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("builtins", "range"),
    ("collections", "OrderedDict"),
    # protocol-2 pickles store bytes as _codecs.encode(text, "latin1"): pure, no side effect
    ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references something outside the allowed set."""


class _RestrictedUnpickler(pickle.Unpickler):
    source = "pickle"

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refusing to load global {module}.{name}; only numpy arrays and builtin "
            "containers are allowed. If you trust this file, convert it with the tool that made it."
        )


def load_pickle(path: str | Path, remake: str = "download it again") -> Any:
    """Load a data pickle (dicts of numpy arrays, lists, strings) safely.

    Raises FileNotFoundError, UnsafePickleError, or ValueError for a truncated file; the
    messages name ``path`` and ``remake`` (how to get the file again, e.g. the download command).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Missing pickle {path}: {remake}.")
    with open(path, "rb") as handle:
        unpickler = _RestrictedUnpickler(handle)
        unpickler.source = str(path)
        try:
            return unpickler.load()
        except UnsafePickleError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError) as error:
            raise ValueError(f"{path} is truncated or not a pickle ({error}): {remake}.") from error


class _ConfigNamespace(SimpleNamespace):
    """Stand-in for any class in a checkpoint's config: its state becomes attributes."""

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


_DENIED_MODULES = {"builtins", "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "pickle", "io", "socket"}
_TORCH_REBUILD = {"_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_tensor"}


class _CheckpointUnpickler(_RestrictedUnpickler):
    """Unpickler for ``torch.load``: tensors and storages, plus config classes as namespaces."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return pickle.Unpickler.find_class(self, module, name)
        if module == "torch._utils" and name in _TORCH_REBUILD:
            return pickle.Unpickler.find_class(self, module, name)
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            return pickle.Unpickler.find_class(self, module, name)
        if module.split(".")[0] not in _DENIED_MODULES | {"torch", "numpy"} and name[:1].isupper():
            return _ConfigNamespace
        raise UnsafePickleError(f"{self.source}: refusing to load global {module}.{name} from a checkpoint.")


class _CheckpointPickleModule:
    """The ``pickle_module`` handed to ``torch.load`` (it only needs ``Unpickler`` and ``load``)."""

    Unpickler = _CheckpointUnpickler
    UnpicklingError = pickle.UnpicklingError
    __name__ = "safe_checkpoint_pickle"

    @staticmethod
    def load(handle, **kwargs) -> Any:
        return _CheckpointUnpickler(handle, **kwargs).load()


def load_mbm_checkpoint(path: str | Path) -> tuple[SimpleNamespace, dict]:
    """Load a published MBM ``sub-XX.pth``: (config as namespace, state dict of tensors)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Missing checkpoint {path}.")
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_CheckpointPickleModule)
    except UnsafePickleError as error:
        raise UnsafePickleError(
            f"{path}: {str(error).removeprefix(_CheckpointUnpickler.source + ': ')} Not loaded: unpickling it could run code; "
            "use a checkpoint that holds tensors and plain settings only."
        ) from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path} is truncated or not a torch checkpoint ({error}).") from error
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"{path}: expected a dict with 'config' and 'model', found {type(payload).__name__}.")
    config = payload.get("config")
    if not isinstance(config, SimpleNamespace):
        config = SimpleNamespace(**config) if isinstance(config, dict) else SimpleNamespace()
    return config, dict(payload["model"])
