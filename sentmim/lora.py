"""LoRA fine-tuning of a backbone model through peft (`pip install "sentmim[lora]"`).

    model = add_lora(SentenceMIMModel.from_backbone("gpt2", latent_size=32), r=8)   # a peft PeftModel
    model = load_lora(SentenceMIMModel.from_pretrained("base"), "adapter")    # one saved with save_pretrained

LoRA adapts the backbone's attention projections; the backbone's own weights stay frozen, and the latent layers
(new, not pretrained) train in full and are saved with the adapter (peft's `modules_to_save`). A training run
records the adapter's config in checkpoints/run/ (`save_lora_config`, `add_saved_lora` on resume) and publishes
`merged_copy`, a plain sentmim model folder. docs/backbones.md ("Memory-light fine-tuning") has the whole workflow.
"""

import copy
import re
import sys
from pathlib import Path

from transformers import Conv1D

from .options import LORA_ALPHA, LORA_DROPOUT

LATENT_LAYERS = ["to_posterior", "latent_to_memory", "latent_to_input"]


def _peft():
    try:
        import peft
    except ImportError:
        raise ImportError('LoRA needs peft: pip install "sentmim[lora]" (or pip install peft)') from None
    return peft


def add_lora(model, r: int = 8, alpha: int = LORA_ALPHA, dropout: float = LORA_DROPOUT,
             target_modules: list[str] | None = None):
    """Wrap a backbone SentenceMIMModel in a peft model with LoRA adapters on its backbone."""
    if model.config.architecture != "backbone":
        raise ValueError(
            f"LoRA adapts a pretrained backbone; this model's architecture is {model.config.architecture!r} "
            "(build it with SentenceMIMModel.from_backbone)"
        )
    peft = _peft()
    model_type = model.config.backbone_config.model_type
    # peft's targets for the model type by default (e.g. q_proj and v_proj for Llama and BART)
    names = target_modules or peft.utils.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if not names:
        raise ValueError(
            f"peft has no default LoRA target modules for model_type={model_type!r}: pass target_modules=[...] "
            "(names of the backbone's attention projections)"
        )
    # Only modules inside the backbone: peft reads a string as a regular expression over full module names.
    targets = rf"backbone\..*\.({'|'.join(names)})"
    targeted = [module for name, module in model.named_modules() if re.fullmatch(targets, name)]
    if not targeted:
        raise ValueError(f"target_modules={names}: no module of the backbone has one of these names")
    lora_config = peft.LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, modules_to_save=LATENT_LAYERS,
        # GPT-2's attention projections are Conv1D layers, which store their weight transposed.
        fan_in_fan_out=isinstance(targeted[0], Conv1D),
    )
    return peft.get_peft_model(model, lora_config)


def load_lora(model, adapter_path, is_trainable: bool = False):
    """The base model `model` with the LoRA adapter saved in `adapter_path` (a folder written by save_pretrained)."""
    return _peft().PeftModel.from_pretrained(model, adapter_path, is_trainable=is_trainable)


# -- in a training run ------------------------------------------------------------------------------------------------

ADAPTER_CONFIG = "adapter_config.json"


def is_lora_model(model) -> bool:
    """Whether `model` is wrapped by peft (without importing peft: a model cannot be wrapped if it is not loaded)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def save_lora_config(model, folder) -> None:
    """Write a LoRA model's adapter config (peft's adapter_config.json) into `folder`; nothing for another model."""
    if is_lora_model(model):
        model.peft_config["default"].save_pretrained(str(folder))


def add_saved_lora(model, folder):
    """`model` wrapped in LoRA adapters as `save_lora_config` recorded them in `folder` (random adapter weights,
    which a checkpoint then replaces); `model` itself when the folder records none."""
    if not (Path(folder) / ADAPTER_CONFIG).is_file():
        return model
    peft = _peft()
    return peft.get_peft_model(model, peft.LoraConfig.from_pretrained(str(folder)))


def merged_copy(model):
    """A plain SentenceMIMModel with the LoRA adapters merged into the backbone's weights, W + (alpha / r) B A; the
    LoRA model itself is left as it is, so that training continues unchanged. Any other model is returned as is."""
    if not is_lora_model(model):
        return model
    return copy.deepcopy(model).merge_and_unload()
