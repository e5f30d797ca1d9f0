"""A post-import hook: run a patch function right after a named module finishes executing.

Patching each llamafactory module the moment it is defined means every later
`from module import Name` anywhere in llamafactory already sees the patched object.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

from rpo_llamafactory import patch

PatchFunction = Callable[[ModuleType], None]

PATCH_POINTS: dict[str, PatchFunction] = {
    "llamafactory.extras.env": patch.check_version,
    "llamafactory.hparams.parser": patch.patch_arg_parser,
    "llamafactory.hparams.finetuning_args": patch.patch_finetuning_args,
    "llamafactory.data.parser": patch.patch_dataset_attr,
    "llamafactory.data.converter": patch.patch_converter,
    "llamafactory.data.loader": patch.patch_loader,
    "llamafactory.data.template": patch.patch_template,
    "llamafactory.data.processor.pairwise": patch.patch_pairwise_processor,
    "llamafactory.model.loader": patch.patch_model_loader,
    "llamafactory.train.dpo.workflow": patch.patch_dpo_workflow,
    "llamafactory.train.dpo.trainer": patch.patch_dpo_trainer,
}
"""The full patch: module → the function applied right after it executes."""

DISABLED_PATCH_POINTS: dict[str, PatchFunction] = {
    "llamafactory.hparams.parser": patch.ignore_rpo_gamma,
}
"""`RPO_PATCH_DISABLE=1`: LLaMA-Factory as released, except that a YAML's `rpo_gamma` is dropped with a
warning, so one YAML serves both arms of an A/B run."""


class _PatchingLoader(importlib.abc.Loader):
    """Delegates to the real loader, then applies the patch to the fresh module."""

    def __init__(self, loader: importlib.abc.Loader, patch_function: PatchFunction):
        self._loader = loader
        self._patch_function = patch_function

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._patch_function(module)

    def __getattr__(self, name: str):  # get_source, get_resource_reader, ... for tracebacks and tools
        return getattr(self._loader, name)


class _PatchFinder(importlib.abc.MetaPathFinder):
    def __init__(self, points: Mapping[str, PatchFunction]):
        self.points = dict(points)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None):
        patch_function = self.points.get(fullname)
        if patch_function is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, patch_function)
                return spec
        return None


def _installed_finder() -> _PatchFinder | None:
    return next((finder for finder in sys.meta_path if isinstance(finder, _PatchFinder)), None)


def install(points: Mapping[str, PatchFunction] = PATCH_POINTS) -> None:
    """Register the hook (idempotent). Must run before llamafactory is imported."""
    if _installed_finder() is not None:
        return
    imported = sorted(name for name in points if name in sys.modules)
    if imported:
        from rpo_llamafactory.errors import RPOError

        raise RPOError(f"rpo_llamafactory must be activated before llamafactory is imported (already: {imported[0]})")
    sys.meta_path.insert(0, _PatchFinder(points))
