"""Read a model folder (config.json, model.safetensors, tokenizer files) without trusting it.

Loading a folder never executes code from it: the classes are ours, never those an `auto_map` in the folder's JSON
names (transformers' remote code), and weights come only from safetensors. Anything damaged or inconsistent ends in
a one-line ValueError that names the file and says what to do, instead of a library traceback.
"""

import itertools
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .configuration import SentenceMIMConfig
from .files import first_line, read_json
from .modeling import SentenceMIMModel

WEIGHTS = "model.safetensors"


def load_config(folder: str | Path) -> SentenceMIMConfig:
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no config.json here; pass a folder written by `sentmim train` or save_pretrained")
    fields = read_json(path, "the folder's model description is damaged; copy the folder again or retrain")
    kind = fields.get("model_type") if isinstance(fields, dict) else None
    if kind != SentenceMIMConfig.model_type:
        raise ValueError(f"{path}: model_type is {kind!r}, not {SentenceMIMConfig.model_type!r}: not a sentmim model")
    try:
        return SentenceMIMConfig.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {first_line(error)}") from None


def weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header; a one-line error for a truncated or foreign file."""
    try:
        with safe_open(path, framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{path} is damaged or not a safetensors file ({first_line(error)}): copy it again, or retrain the model"
        ) from None


def check_weights_match(config: SentenceMIMConfig, path: Path) -> None:
    """Refuse weights whose tensors or sizes disagree with config.json (transformers would re-initialise them)."""
    saved = weight_shapes(path)
    with torch.device("meta"):  # shapes only, nothing allocated
        model = SentenceMIMModel(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    # Tied weights are one tensor under several names, saved under one of them.
    names_of = {}
    for name, tensor in itertools.chain(model.named_parameters(remove_duplicate=False),
                                        model.named_buffers(remove_duplicate=False)):
        if name in expected:
            names_of.setdefault(id(tensor), []).append(name)
    missing = sorted(names[0] for names in names_of.values() if not any(name in saved for name in names))
    differing = sorted(name for name in set(saved) & set(expected) if saved[name] != expected[name])
    unexpected = sorted(set(saved) - set(expected))
    config_path = path.parent / "config.json"
    if differing:
        name = differing[0]
        raise ValueError(
            f"{config_path} does not match {path}: {name} is {list(saved[name])} in the weights but "
            f"{list(expected[name])} by the config ({len(differing)} tensor(s) differ); restore the config.json "
            "saved with these weights"
        )
    if missing or unexpected:
        raise ValueError(
            f"{config_path} does not match {path}: tensors missing {missing[:3]}, unexpected {unexpected[:3]}; "
            "restore the config.json saved with these weights"
        )


def load_model(folder: str | Path, config: SentenceMIMConfig | None = None) -> SentenceMIMModel:
    """The model saved in `folder` (its config.json, or `config` with the same sizes), checked before loading."""
    folder = Path(folder)
    config = config if config is not None else load_config(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ValueError(
            f"{folder}: no {WEIGHTS} here (a run publishes it at its first evaluation); pass a trained model folder"
        )
    check_weights_match(config, weights)
    try:
        return SentenceMIMModel.from_pretrained(
            folder, config=config, use_safetensors=True, trust_remote_code=False, local_files_only=True
        )
    except (SafetensorError, OSError, RuntimeError) as error:  # the data past the header may still be damaged
        raise ValueError(
            f"{weights} could not be loaded ({first_line(error)}): copy it again, or retrain the model"
        ) from None


class AutoSentenceMIMModel:
    """The model class of the "sentence-reconstruction" task: `transformers.pipeline(task, model=folder)` calls its
    `from_pretrained`, which, like an Auto class, returns the SentenceMIMModel saved in the folder, read by
    `load_model` (checked, weights from safetensors only, no code from the folder) rather than by transformers."""

    # What transformers.pipeline passes with every load; a local folder needs none of them (load_model reads and
    # checks config.json itself).
    HUB_OPTIONS = frozenset({"config", "revision", "token", "local_files_only", "cache_dir", "_from_pipeline"})

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, trust_remote_code: bool | None = None,
                        dtype: str | torch.dtype | None = None, **options) -> SentenceMIMModel:
        if trust_remote_code:
            raise ValueError(f"{folder}: trust_remote_code=True: sentmim never runs code from a model folder; leave "
                             "it unset")
        unknown = sorted(set(options) - cls.HUB_OPTIONS)
        if unknown:
            raise ValueError(f"{folder}: option(s) {', '.join(unknown)} not supported by sentmim's loader: pass "
                             "device= (or dtype=) to the pipeline instead")
        model = load_model(folder)
        if dtype is not None and dtype != "auto":  # "auto" (transformers.pipeline's default): as saved
            model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        return model
