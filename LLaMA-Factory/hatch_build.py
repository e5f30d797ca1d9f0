"""Ship the start-up hook file (`rpo_llamafactory.pth`) in normal and editable wheels."""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class PthHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})["rpo_llamafactory.pth"] = "rpo_llamafactory.pth"
