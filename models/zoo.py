"""Model presets: the real models by Hugging Face id or local path, tiny offline twins, and demo models.

Three presets (``--preset``):

- ``default``: the real checkpoints, loaded with ``from_pretrained`` from a local directory
  (``model_path``) or by Hugging Face id through the cache in ``HF_HOME`` / ``HF_HUB_CACHE``.
  ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) forbids any network access. The
  environment is read at call time. Absent weights raise :class:`ModelNotAvailableError`
  with one message naming the model, what was tried and how to get it.
- ``tiny``: the *same classes* built from tiny configs in code, weights drawn under
  ``torch.manual_seed(0)`` (in a forked RNG, so the caller's RNG state is untouched) and
  tokenizers from in-code vocabularies: deterministic, offline, CPU-fast (unit tests).
- ``demo``: the same classes at small sizes, with weights FITTED to the synthetic demo world by
  ``fit_demo_models.py`` (``models/demo/``) and loaded exactly as the real ones, with
  ``from_pretrained`` from their ``save_pretrained`` folders under ``<data root>/models_demo/``
  (``demo_model_path``; a ``--model-path`` given still wins). Pass ``data_root`` to the loaders.

``real_*_config()`` functions give the full-size architectures (facts from the published
configs) so benchmarks can time them with random weights: ``build_random(name)``.

Loaders:
    load_zeroscope(preset, model_path=None, device="cpu", dtype=torch.float32, parts=...) -> dict
    load_blip(preset, ...)             -> (BlipForConditionalGeneration, BlipProcessor)
    load_clip(preset, ...)             -> (CLIPModel, CLIPProcessor)
    load_image_classifier(preset, ...) -> (ViTForImageClassification, image processor)
    load_video_classifier(preset, ...) -> (VideoMAEForVideoClassification, image processor)
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from utils import layout

ZEROSCOPE_ID = "cerspense/zeroscope_v2_576w"
ZEROSCOPE_PARTS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
BLIP_ID = "Salesforce/blip-image-captioning-base"  # BLIP base, CapFilt-L, COCO captioning
CLIP_ID = "openai/clip-vit-large-patch14"
IMAGE_CLASSIFIER_ID = "google/vit-base-patch16-224"
VIDEO_CLASSIFIER_ID = "MCG-NJU/videomae-base-finetuned-kinetics"
PRESETS = ("default", "tiny", "demo")

# Hidden width of the mlp / swiglu regressors (regress.py --hidden-dim) per preset.
REGRESSOR_HIDDEN_DIM = {"default": 1024, "tiny": 128, "demo": 128}

# BLIP and OpenAI CLIP share these normalisation constants (inputs in [0, 1] first).
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Input sizes each preset expects (pixels, square).
BLIP_IMAGE_SIZE = {"default": 240, "tiny": 32, "demo": 64}
CLIP_IMAGE_SIZE = {"default": 224, "tiny": 32, "demo": 64}
ZEROSCOPE_FRAME_SIZE = {"default": 268, "tiny": 64, "demo": 64}
VAE_DOWNSAMPLE = 8
TINY_SEED = 0

TINY_WORDS = (
    "a an the picture photo of video image clip with and on in at is are to from over under "
    "across around into through left right up down top bottom center middle background "
    "foreground moving moves move slowly quickly fast slow rotating spinning bouncing sliding "
    "growing shrinking blinking turning flying falling rising circle circles square squares "
    "triangle triangles star stars ball balls box boxes disk ring rings stripe stripes bar bars "
    "line lines dot dots shape shapes object objects red green blue yellow orange purple white "
    "black gray grey pink cyan magenta brown small large big tiny bright dark light one two three "
    "four many some person people man woman child dog cat car bird tree water sky grass field room "
    "street road house walking running playing sitting standing dancing swimming riding eating "
    "holding looking outside inside scene view close camera diamond rhombus kite disc block tile pyramid "
    "wedge triangular round leftwards rightwards upwards downwards travelling drifting floating lifting "
    "ascending dropping sinking descending glides slides animation simple striped wall curtain wallpaper "
    "fence indoor tiled floor checkerboard bathroom kitchen game board cloudy horizon outdoor open air "
    "desert sand beach dune going geometric"
).split()


class ModelNotAvailableError(RuntimeError):
    """Real model weights are not on this machine (and may not be fetched)."""


# ---------------------------------------------------------------- helpers


def check_preset(preset: str) -> None:
    """Raise a ValueError naming the allowed presets."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset={preset!r}; use one of {list(PRESETS)}.")


def blip_image_size(preset: str) -> int:
    """Square input size of the BLIP vision encoder for a preset (240 real, 32 tiny)."""
    check_preset(preset)
    return BLIP_IMAGE_SIZE[preset]


def clip_image_size(preset: str) -> int:
    """Square input size of the CLIP image encoder for a preset (224 real, 32 tiny)."""
    check_preset(preset)
    return CLIP_IMAGE_SIZE[preset]


def zeroscope_frame_size(preset: str) -> int:
    """Default square frame size for Zeroscope latents (268 real -> 33x33 latents; tiny 64)."""
    check_preset(preset)
    return ZEROSCOPE_FRAME_SIZE[preset]


def latent_size(frame_size: int) -> int:
    """Spatial latent size of the (real or tiny) VAE for a square frame: 268 -> 33, 64 -> 8."""
    size = frame_size
    for _ in range(3):  # three 3x3 stride-2 convolutions with (0, 1) padding: floor(size / 2)
        size //= 2
    return size


def blip_num_tokens(model: Any, image_size: int) -> int:
    """Vision tokens of a BLIP model at ``image_size``: 1 + (image_size / patch)^2 (226 at 240)."""
    patch = model.config.vision_config.patch_size
    return 1 + (image_size // patch) ** 2


@contextlib.contextmanager
def seeded(seed: int = TINY_SEED) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)`` without changing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _hub_kwargs() -> dict[str, Any]:
    """Cache directory and offline flag from the environment, read now (not at import)."""
    hub_cache = os.environ.get("HF_HUB_CACHE")
    if not hub_cache:
        hf_home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        hub_cache = os.path.join(hf_home, "hub")
    offline = any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return {"cache_dir": hub_cache, "local_files_only": offline}


def _not_available(what: str, source: str, local: bool, error: BaseException | None, flag: str = "--model-path") -> ModelNotAvailableError:
    """Build the one clear message for a missing real model; ``flag``: the running script's local-path flag."""
    if local:
        where = f"local path {source!r}"
        how = f"check the path, or drop {flag} to use the Hugging Face id (get it with `hf download {_default_id(what)}`)"
    else:
        kwargs = _hub_kwargs()
        mode = "offline mode (HF_HUB_OFFLINE=1)" if kwargs["local_files_only"] else "the Hugging Face Hub"
        where = f"Hugging Face id {source!r} (cache {kwargs['cache_dir']}, {mode})"
        how = (
            f"run `hf download {source}` (older huggingface_hub: `huggingface-cli download {source}`) on a machine "
            f"with network access, or pass {flag} DIR with a local copy"
        )
    detail = f" [{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}]" if error else ""
    return ModelNotAvailableError(
        f"{what} is not available: tried {where}. To get it, {how}; or use --preset tiny for offline tiny models.{detail}"
    )


def _default_id(what: str) -> str:
    return {
        "Zeroscope": ZEROSCOPE_ID,
        "BLIP": BLIP_ID,
        "CLIP": CLIP_ID,
        "Image classifier": IMAGE_CLASSIFIER_ID,
        "Video classifier": VIDEO_CLASSIFIER_ID,
    }.get(what.split(" (")[0], "<model id>")


def _source(model_path: str | Path | None, default_id: str, what: str, flag: str = "--model-path") -> tuple[str, bool]:
    """(source, is_local): a local directory when given (must exist), else the HF id."""
    if model_path is None:
        return default_id, False
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise _not_available(what, str(path), True, FileNotFoundError(f"{path} is not a directory"), flag)
    return str(path), True


def _pretrained(loader: Any, source: str, local: bool, what: str, flag: str = "--model-path", **kwargs: Any) -> Any:
    """``loader(source, **kwargs)`` with cache/offline kwargs; missing weights -> ModelNotAvailableError."""
    hub = {"local_files_only": True} if local else _hub_kwargs()
    try:
        return loader(source, **hub, **kwargs)
    except (OSError, ValueError) as error:  # transformers/diffusers raise OSError (EnvironmentError) for missing files
        raise _not_available(what, source, local, error, flag) from error
    except Exception as error:  # huggingface_hub network errors (httpx based) are not OSErrors
        if type(error).__module__.startswith(("huggingface_hub", "httpx", "requests")):
            raise _not_available(what, source, local, error, flag) from error
        raise


def _place(module: torch.nn.Module, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Move to device/dtype (cast only when it differs) and switch to eval mode."""
    module = module.to(device)
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype=dtype)
    return module.eval()


def _load_pair(
    model_cls: Any, processor_cls: Any, model_path: str | Path | None, default_id: str, what: str, device: str, dtype: torch.dtype,
    flag: str = "--model-path",
) -> tuple[Any, Any]:
    """A real model and its processor from ``model_path`` or ``default_id``, placed on device/dtype."""
    source, local = _source(model_path, default_id, what, flag)
    model = _pretrained(model_cls.from_pretrained, source, local, what, flag)
    processor = _pretrained(processor_cls.from_pretrained, source, local, what, flag)
    return _place(model, device, dtype), processor


def model_source(preset: str, model_path: str | Path | None, default_id: str, data_root: str | Path | None = None, folder: str = "") -> str:
    """What a manifest records as the model used: the local path, the Hugging Face id, ``tiny``, or
    the demo folder ``models_demo/<folder>`` under ``data_root``."""
    check_preset(preset)
    if model_path is not None:
        return str(model_path)
    if preset == "demo":
        return str(layout.demo_model_dir(data_root, folder))
    return default_id if preset == "default" else "tiny"


def demo_model_path(preset: str, model_path: str | Path | None, data_root: str | Path | None, folder: str) -> str | Path | None:
    """The folder a loader reads: ``model_path`` when given; for ``--preset demo`` the fitted folder
    ``models_demo/<folder>`` under ``data_root`` (refused, naming the command, until its fit is complete)."""
    if model_path is not None or preset != "demo":
        return model_path
    from models.demo.fit import missing_steps

    missing = missing_steps(data_root, folder)
    if missing:
        raise ModelNotAvailableError(
            f"The demo preset's {folder} model is not fitted under {layout.root(data_root)} (missing fit steps {missing}): "
            f"run `python fit_demo_models.py --data-root {layout.root(data_root)}` first (python run_pipeline.py does it)."
        )
    return layout.demo_model_dir(data_root, folder)


def describe_sizes(sizes: dict[str, int]) -> str:
    """``{"default": 268, "tiny": 64}`` -> ``"268 for --preset default, 64 for tiny"`` (for --help)."""
    parts = [f"{size} for {'--preset ' if i == 0 else ''}{preset}" for i, (preset, size) in enumerate(sizes.items())]
    return ", ".join(parts)


def has_random_weights(preset: str) -> bool:
    """True for presets whose models have random weights (tiny): their classifier, CLIP and caption
    scores measure nothing. The demo preset's models are fitted to the synthetic world."""
    check_preset(preset)
    return preset == "tiny"


def refuse_unused_model_paths(preset: str, paths: dict[str, str | None]) -> None:
    """Refuse local model paths (``{flag: value}``) that ``preset`` would ignore, before any work: the
    presets whose models are built in code (``has_random_weights``: tiny) load nothing from disk."""
    given = {flag: value for flag, value in paths.items() if value is not None}
    if given and has_random_weights(preset):
        shown = ", ".join(f"{flag} {value}" for flag, value in given.items())
        raise ValueError(
            f"--preset {preset} builds its models in code and would ignore {shown}: drop {' and '.join(given)} "
            "to use the tiny models, or use --preset default to load the models from there."
        )


def default_preset(synthetic: bool) -> str:
    """The preset a run uses unless told: the demo models fitted to the synthetic world on synthetic data,
    the real models otherwise."""
    return "demo" if synthetic else "default"


# ---------------------------------------------------------------- tiny tokenizers


def bert_vocab(words: tuple[str, ...] | list[str]) -> dict[str, int]:
    """WordPiece vocabulary: specials, ``words``, characters and ``##`` pieces, BLIP's ``[DEC]`` last."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,!?'-:;\"()")
    for token in list(words) + chars + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]:
        if token not in tokens:
            tokens.append(token)
    tokens.append("[DEC]")  # BLIP's decoder start (bos) token, appended like the real one (30522)
    return {token: i for i, token in enumerate(tokens)}


def bert_tokenizer(words: tuple[str, ...] | list[str]) -> Any:
    """BertTokenizer over :func:`bert_vocab` ``(words)`` with BLIP's ``[DEC]`` bos token."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab=bert_vocab(words), do_lower_case=True, model_max_length=64)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def tiny_bert_vocab() -> dict[str, int]:
    """WordPiece vocabulary of the tiny BLIP (``TINY_WORDS``)."""
    return bert_vocab(TINY_WORDS)


def tiny_bert_tokenizer() -> Any:
    """BertTokenizer of the tiny BLIP."""
    return bert_tokenizer(TINY_WORDS)


def clip_vocab(words: tuple[str, ...] | list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges for a small CLIP tokenizer (each of ``words`` merged whole)."""
    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;\"()"
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(chars) + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merge = (pieces[0], pieces[1])
            merged = pieces[0] + pieces[1]
            if merge not in merges:
                merges.append(merge)
            if merged not in tokens:
                tokens.append(merged)
            pieces = [merged] + pieces[2:]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer(words: tuple[str, ...] | list[str]) -> Any:
    """CLIPTokenizer over :func:`clip_vocab` ``(words)``, ``model_max_length=77`` like the real one."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE vocabulary and merges of the tiny CLIP tokenizer (``TINY_WORDS``)."""
    return clip_vocab(TINY_WORDS)


def tiny_clip_tokenizer() -> Any:
    """CLIPTokenizer of the tiny models."""
    return clip_tokenizer(TINY_WORDS)


def demo_words() -> list[str]:
    """Vocabulary of the demo models: every word of the synthetic captions, and the caption prompt's."""
    from utils.synthetic import caption_words

    words = caption_words()
    return words + [w for w in ("picture", "photo", "video", "of") if w not in words]


# ---------------------------------------------------------------- configs


def tiny_clip_text_config(tokenizer: Any, hidden: int = 32, projection_dim: int = 32) -> dict[str, Any]:
    """Tiny CLIP text-encoder config matched to the tiny CLIP tokenizer."""
    return {
        "vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
        "projection_dim": projection_dim, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
    }


def tiny_vae_config() -> dict[str, Any]:
    """AutoencoderKL with 4 latent channels and 8x downsampling like Zeroscope's, tiny widths."""
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4,
        "sample_size": 64, "scaling_factor": 0.18215,
    }


def real_vae_config() -> dict[str, Any]:
    """Zeroscope v2 576w VAE (the Stable Diffusion 2 VAE): 8x, 4 latent channels."""
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
        "act_fn": "silu", "sample_size": 768, "scaling_factor": 0.18215,
    }


def tiny_unet_config(cross_attention_dim: int = 32) -> dict[str, Any]:
    """Tiny UNet3DConditionModel whose cross-attention matches the tiny CLIP text encoder."""
    return {
        "sample_size": 8, "in_channels": 4, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
        "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 4,
        "cross_attention_dim": cross_attention_dim, "attention_head_dim": 8,
    }


def real_unet_config() -> dict[str, Any]:
    """Zeroscope v2 576w UNet3D (ModelScope text-to-video layout)."""
    return {
        "sample_size": 32, "in_channels": 4, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
        "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
        "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "norm_num_groups": 32,
        "cross_attention_dim": 1024, "attention_head_dim": 64,
    }


def real_text_encoder_config() -> dict[str, Any]:
    """Zeroscope's text encoder: OpenCLIP ViT-H/14 text tower (23 layers, width 1024)."""
    return {
        "vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
        "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu",
        "projection_dim": 512, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1,
    }


def tiny_scheduler_config() -> dict[str, Any]:
    """Scheduler settings of Zeroscope (scaled-linear betas, epsilon prediction)."""
    return {
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1,
    }


def tiny_blip_config(vocab: dict[str, int]) -> Any:
    """Tiny BlipConfig: 32x32 images, patch 8 (17 vision tokens), width 32."""
    from transformers import BlipConfig

    text = {
        "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 64, "pad_token_id": vocab["[PAD]"],
        "bos_token_id": vocab["[DEC]"], "sep_token_id": vocab["[SEP]"], "eos_token_id": vocab["[SEP]"],
    }
    vision = {
        "image_size": BLIP_IMAGE_SIZE["tiny"], "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4,
    }
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=32)


def real_blip_config() -> Any:
    """BLIP base captioning (ViT-B/16 at 384, BERT-base decoder, vocab 30524)."""
    from transformers import BlipConfig

    text = {
        "vocab_size": 30524, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "max_position_embeddings": 512, "pad_token_id": 0,
        "bos_token_id": 30522, "sep_token_id": 102, "eos_token_id": 2,
    }
    vision = {
        "image_size": 384, "patch_size": 16, "hidden_size": 768, "intermediate_size": 3072,
        "num_hidden_layers": 12, "num_attention_heads": 12,
    }
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=512)


def tiny_clip_config(tokenizer: Any) -> Any:
    """Tiny CLIPConfig: 32x32 images, patch 8, width 32, projection 16."""
    from transformers import CLIPConfig

    vision = {
        "image_size": CLIP_IMAGE_SIZE["tiny"], "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 16,
    }
    return CLIPConfig(text_config=tiny_clip_text_config(tokenizer, projection_dim=16), vision_config=vision, projection_dim=16)


def real_clip_config() -> Any:
    """OpenAI CLIP ViT-L/14 (224 px, projection 768)."""
    from transformers import CLIPConfig

    text = {
        "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "max_position_embeddings": 77, "projection_dim": 768,
    }
    vision = {
        "image_size": 224, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "projection_dim": 768,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)


def build_random(name: str, seed: int = TINY_SEED) -> torch.nn.Module:
    """A full-size architecture with random weights (for timing): ``vae``, ``unet``,
    ``text_encoder``, ``blip`` or ``clip``."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import BlipForConditionalGeneration, CLIPModel, CLIPTextConfig, CLIPTextModel

    builders = {
        "vae": lambda: AutoencoderKL(**real_vae_config()),
        "unet": lambda: UNet3DConditionModel(**real_unet_config()),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**real_text_encoder_config())),
        "blip": lambda: BlipForConditionalGeneration(real_blip_config()),
        "clip": lambda: CLIPModel(real_clip_config()),
    }
    if name not in builders:
        raise ValueError(f"Unknown architecture name={name!r}; use one of {sorted(builders)}.")
    with seeded(seed):
        return builders[name]().eval()


# ---------------------------------------------------------------- loaders


def load_zeroscope(
    preset: str,
    model_path: str | Path | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    parts: tuple[str, ...] = ZEROSCOPE_PARTS,
    flag: str = "--model-path",
    data_root: str | Path | None = None,
) -> dict[str, Any]:
    """Zeroscope components by name: ``vae`` (AutoencoderKL), ``unet`` (UNet3DConditionModel),
    ``text_encoder`` (CLIPTextModel), ``tokenizer`` (CLIPTokenizer), ``scheduler``
    (DPMSolverMultistepScheduler). Only ``parts`` are built/loaded. ``flag``: the caller's
    local-path flag, named by the "not available" hint; ``data_root``: where ``--preset demo``
    finds its fitted models (``demo_model_path``)."""
    check_preset(preset)
    model_path = demo_model_path(preset, model_path, data_root, "zeroscope")
    unknown = [p for p in parts if p not in ZEROSCOPE_PARTS]
    if unknown:
        raise ValueError(f"Unknown Zeroscope parts {unknown}; choose from {list(ZEROSCOPE_PARTS)}.")
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out: dict[str, Any] = {}
    if preset == "tiny":
        tokenizer = tiny_clip_tokenizer()
        text_config = CLIPTextConfig(**tiny_clip_text_config(tokenizer))
        builders = {
            "vae": lambda: AutoencoderKL(**tiny_vae_config()),
            "unet": lambda: UNet3DConditionModel(**tiny_unet_config(text_config.hidden_size)),
            "text_encoder": lambda: CLIPTextModel(text_config),
        }
        for index, part in enumerate(("vae", "unet", "text_encoder")):
            if part in parts:
                with seeded(TINY_SEED + index):
                    out[part] = _place(builders[part](), device, dtype)
        if "tokenizer" in parts:
            out["tokenizer"] = tokenizer
        if "scheduler" in parts:
            out["scheduler"] = DPMSolverMultistepScheduler(**tiny_scheduler_config())
        return {p: out[p] for p in parts}

    source, local = _source(model_path, ZEROSCOPE_ID, "Zeroscope", flag)
    loaders = {
        "vae": AutoencoderKL.from_pretrained, "unet": UNet3DConditionModel.from_pretrained,
        "text_encoder": CLIPTextModel.from_pretrained, "tokenizer": CLIPTokenizer.from_pretrained,
        "scheduler": DPMSolverMultistepScheduler.from_pretrained,
    }
    for part in parts:
        loaded = _pretrained(loaders[part], source, local, f"Zeroscope ({part})", flag, subfolder=part)
        out[part] = _place(loaded, device, dtype) if isinstance(loaded, torch.nn.Module) else loaded
    return out


def load_blip(
    preset: str, model_path: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32, flag: str = "--model-path",
    data_root: str | Path | None = None,
) -> tuple[Any, Any]:
    """BLIP captioning model and processor (real: BLIP base CapFilt-L; use the vision encoder at
    :func:`blip_image_size` with ``interpolate_pos_encoding=True``)."""
    check_preset(preset)
    model_path = demo_model_path(preset, model_path, data_root, "blip")
    from transformers import BlipForConditionalGeneration, BlipProcessor

    if preset == "tiny":
        tokenizer = tiny_bert_tokenizer()
        with seeded(TINY_SEED):
            model = BlipForConditionalGeneration(tiny_blip_config(tiny_bert_vocab()))
        size = BLIP_IMAGE_SIZE["tiny"]
        image_processor = _image_processor("Blip", size={"height": size, "width": size}, image_mean=BLIP_MEAN, image_std=BLIP_STD)
        return _place(model, device, dtype), BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _load_pair(BlipForConditionalGeneration, BlipProcessor, model_path, BLIP_ID, "BLIP", device, dtype, flag)


def load_clip(
    preset: str, model_path: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32, flag: str = "--model-path",
    data_root: str | Path | None = None,
) -> tuple[Any, Any]:
    """CLIP model and processor (real: OpenAI ViT-L/14, 768-d embeddings)."""
    check_preset(preset)
    model_path = demo_model_path(preset, model_path, data_root, "clip")
    from transformers import CLIPModel, CLIPProcessor

    if preset == "tiny":
        tokenizer = tiny_clip_tokenizer()
        with seeded(TINY_SEED):
            model = CLIPModel(tiny_clip_config(tokenizer))
        size = CLIP_IMAGE_SIZE["tiny"]
        image_processor = _image_processor(
            "CLIP", size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_mean=BLIP_MEAN, image_std=BLIP_STD
        )
        return _place(model, device, dtype), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _load_pair(CLIPModel, CLIPProcessor, model_path, CLIP_ID, "CLIP", device, dtype, flag)


def load_image_classifier(
    preset: str, model_path: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
    data_root: str | Path | None = None,
) -> tuple[Any, Any]:
    """ViT image classifier and its image processor (real: ImageNet-1k, 1000 classes, 224 px)."""
    check_preset(preset)
    model_path = demo_model_path(preset, model_path, data_root, "image_classifier")
    from transformers import AutoImageProcessor, ViTConfig, ViTForImageClassification

    if preset == "tiny":
        config = ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_labels=1000, id2label={i: f"class_{i}" for i in range(1000)},
        )
        with seeded(TINY_SEED):
            model = ViTForImageClassification(config)
        processor = _image_processor("ViT", size={"height": 32, "width": 32}, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
        return _place(model, device, dtype), processor
    return _load_pair(ViTForImageClassification, AutoImageProcessor, model_path, IMAGE_CLASSIFIER_ID, "Image classifier", device, dtype)


def load_video_classifier(
    preset: str, model_path: str | Path | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32,
    data_root: str | Path | None = None,
) -> tuple[Any, Any]:
    """VideoMAE video classifier and its image processor (real: Kinetics-400, 16 frames, 224 px).
    The number of frames it takes is ``model.config.num_frames``."""
    check_preset(preset)
    model_path = demo_model_path(preset, model_path, data_root, "video_classifier")
    from transformers import AutoImageProcessor, VideoMAEConfig, VideoMAEForVideoClassification

    if preset == "tiny":
        config = VideoMAEConfig(
            image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_labels=400, use_mean_pooling=True,
            id2label={i: f"action_{i}" for i in range(400)},
        )
        with seeded(TINY_SEED):
            model = VideoMAEForVideoClassification(config)
        processor = _image_processor(
            "VideoMAE", size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
        )
        return _place(model, device, dtype), processor
    return _load_pair(VideoMAEForVideoClassification, AutoImageProcessor, model_path, VIDEO_CLASSIFIER_ID, "Video classifier", device, dtype)


def _image_processor(prefix: str, **kwargs: Any) -> Any:
    """The torchvision-backed image processor when torchvision is installed, else the PIL one
    (same numbers; avoids transformers' fallback warning)."""
    import importlib.util

    import transformers

    name = f"{prefix}ImageProcessor"
    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, f"{name}Pil"):
        name = f"{name}Pil"
    return getattr(transformers, name)(**kwargs)


# ---------------------------------------------------------------- MBM sizes (models.mbm.MaskedBrainModel)

# Fields of models.mbm.MBMConfig per preset; the mask ratio is MBMConfig's default.
MBM_SIZES: dict[str, dict[str, Any]] = {
    # The published BMD encoder (Mind-Vis / MinD-Video "MAE for fMRI" sizes).
    "default": dict(
        patch_size=16, embed_dim=1024, depth=24, num_heads=16,
        decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=1.0,
    ),
    # Offline tests and the demo: the same classes, small enough for seconds on a CPU.
    "tiny": dict(
        patch_size=64, embed_dim=64, depth=2, num_heads=4,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, mlp_ratio=2.0,
    ),
}
MBM_SIZES["demo"] = MBM_SIZES["tiny"]  # the demo's brain encoder is trained by train_mbm.py like any other



def mbm_config(preset: str, num_voxels: int, **overrides: Any) -> Any:
    """The ``models.mbm.MBMConfig`` of ``preset`` for inputs of ``num_voxels`` (padded) values.

    ``overrides`` replace fields (None values are ignored, e.g. ``mask_ratio=None``).
    """
    from models.mbm import MBMConfig

    values = {**MBM_SIZES[_check_mbm_preset(preset)], **{k: v for k, v in overrides.items() if v is not None}}
    return MBMConfig(num_voxels=num_voxels, **values)


def mbm_patch_size(preset: str) -> int:
    """Patch size of an MBM preset (needed to pad the data before the model exists)."""
    return int(MBM_SIZES[_check_mbm_preset(preset)]["patch_size"])


def _check_mbm_preset(preset: str) -> str:
    if preset not in MBM_SIZES:
        raise ValueError(f"Unknown MBM preset={preset!r}. Known presets: {sorted(MBM_SIZES)}.")
    return preset
