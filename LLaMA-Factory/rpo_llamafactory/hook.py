"""A post-import hook: run a patch function right after a named module finishes executing.

Patching each llamafactory module the moment it is defined means every later
`from module import Name` anywhere in llamafactory already sees the patched object.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

# module → "function in rpo_llamafactory.patch" applied after it executes
PATCH_POINTS = {
    "llamafactory.extras.env": "check_version",
    "llamafactory.hparams.finetuning_args": "patch_finetuning_args",
    "llamafactory.data.parser": "patch_dataset_attr",
    "llamafactory.data.converter": "patch_converter",
    "llamafactory.data.loader": "patch_loader",
    "llamafactory.data.processor.pairwise": "patch_pairwise_processor",
    "llamafactory.train.dpo.workflow": "patch_dpo_workflow",
    "llamafactory.train.dpo.trainer": "patch_dpo_trainer",
}


class _PatchingLoader(importlib.abc.Loader):
    """Delegates to the real loader, then applies the patch to the fresh module."""

    def __init__(self, loader: importlib.abc.Loader, patch_name: str):
        self._loader = loader
        self._patch_name = patch_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        from rpo_llamafactory import patch

        getattr(patch, self._patch_name)(module)

    def __getattr__(self, name: str):  # get_source, get_resource_reader, ... for tracebacks and tools
        return getattr(self._loader, name)


class _PatchFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None):
        patch_name = PATCH_POINTS.get(fullname)
        if patch_name is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, patch_name)
                return spec
        return None


def install() -> None:
    """Register the hook (idempotent). Must run before llamafactory is imported."""
    if any(isinstance(finder, _PatchFinder) for finder in sys.meta_path):
        return
    imported = sorted(name for name in PATCH_POINTS if name in sys.modules)
    if imported:
        from rpo_llamafactory.errors import RPOError

        raise RPOError(f"rpo_llamafactory must be activated before llamafactory is imported (already: {imported[0]})")
    sys.meta_path.insert(0, _PatchFinder())
