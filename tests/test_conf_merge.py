"""`generate_conf_file.py --method merge`: its YAML merges a LoRA adapter into the base through the real
`llamafactory-cli export`, and the merged model computes what base + adapter compute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from rpo.utils.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def build_tiny_adapter(model_dir: Path, adapter_dir: Path) -> Path:
    """A LoRA adapter on the tiny model whose weights are not the identity (so merging changes outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                      task_type="CAUSAL_LM")
    get_peft_model(base, lora).save_pretrained(str(adapter_dir))
    return adapter_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("merge")
    model = build_tiny_model(root / "tiny-chat")
    return model, build_tiny_adapter(model, root / "adapter")


def _generate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "src/utils/generate_conf_file.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_merge_config_exports_a_model_equal_to_base_plus_adapter(tiny, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, adapter = tiny
    output = tmp_path / "merge.yaml"
    proc = _generate("--method=merge", f"--model_path={model}", f"--adapter_path={adapter}",
                     f"--export_dir={tmp_path / 'merged'}", f"--output={output}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"llamafactory-cli export {output}"
    config = yaml.safe_load(output.read_text())
    assert config == {
        "model_name_or_path": str(model), "adapter_name_or_path": str(adapter), "template": "chatml",
        "trust_remote_code": True, "finetuning_type": "lora", "export_dir": str(tmp_path / "merged"),
        "export_size": 5, "export_device": "cpu", "export_legacy_format": False,
    }

    export = subprocess.run(
        [str(BIN / "llamafactory-cli"), "export", str(output)], cwd=tmp_path,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True, text=True, timeout=600,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model)), str(adapter))
    base = AutoModelForCausalLM.from_pretrained(str(model))
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        merged_logits = merged(ids).logits
        assert torch.allclose(merged_logits, reference(ids).logits, atol=1e-5)
        assert not torch.allclose(merged_logits, base(ids).logits, atol=1e-3)
    assert not any(name.startswith("adapter_") for name in os.listdir(tmp_path / "merged"))


def test_merge_needs_an_adapter_directory(tiny, tmp_path):
    model, _ = tiny
    proc = _generate("--method=merge", f"--model_path={model}", f"--adapter_path={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: --adapter_path: {str(tmp_path)!r} is not a LoRA adapter directory (no adapter_config.json)"
    )
