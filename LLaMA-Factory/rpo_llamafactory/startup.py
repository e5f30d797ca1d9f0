"""Interpreter start-up hook, imported by `rpo_llamafactory.pth` in every Python process.

It only registers a post-import hook (cheap: no torch, no llamafactory import). The patches run
when llamafactory's own modules are first imported, in whatever process that happens: the
`llamafactory-cli` process, a Python API user, or a torchrun/DeepSpeed worker.
`RPO_PATCH_DISABLE=1` leaves LLaMA-Factory as released, except that it drops `rpo_gamma` from the
config with a warning (one YAML then serves both arms of an A/B comparison).
"""

import os

from rpo_llamafactory.hook import DISABLED_PATCH_POINTS, PATCH_POINTS, install

disabled = os.environ.get("RPO_PATCH_DISABLE", "").strip().lower() in {"1", "true", "yes", "on"}
install(DISABLED_PATCH_POINTS if disabled else PATCH_POINTS)
