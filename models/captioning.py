"""Captions from BLIP image embeddings: the BLIP text decoder on given encoder states.

The ``blip`` targets (and their predictions) are the BLIP vision encoder's last hidden state
averaged over 15 frames, (226, 768) for BLIP base at 240x240. ``caption_embeddings`` feeds
such states to ``model.text_decoder.generate`` the way ``BlipForConditionalGeneration.generate``
does after its vision encoder: the prompt ("a picture of ") opens every caption, with its
first token replaced by BOS and its trailing SEP dropped; generation stops at SEP. The prompt
tokens are cut from the output before decoding, so captions never start with the prompt.
Defaults: beam search (3 beams), max length 20, min length 4 (both counted with the prompt
tokens), repetition penalty 6.0. The original decoded greedily (``num_beams=1``) with the same
lengths and penalty and replaced "/" in captions with a space (``slash_to_space=True``); both
are part of ``--recipe original`` (models/recipes.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from utils.targets import as_stored_shape

DEFAULT_PROMPT = "a picture of "


@dataclass(frozen=True)
class CaptionSettings:
    """Decoding settings; ``sample`` switches from beam search to nucleus sampling (seeded);
    ``slash_to_space`` replaces "/" in the decoded captions with a space (the original's)."""

    prompt: str = DEFAULT_PROMPT
    num_beams: int = 3
    max_length: int = 20
    min_length: int = 4
    repetition_penalty: float = 6.0
    sample: bool = False
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0
    slash_to_space: bool = False

    def generate_kwargs(self) -> dict:
        """Keyword arguments for ``generate``."""
        kwargs = {"max_length": self.max_length, "min_length": self.min_length, "repetition_penalty": self.repetition_penalty}
        if self.sample:
            kwargs.update(do_sample=True, top_p=self.top_p, temperature=self.temperature, num_beams=1)
        else:
            kwargs.update(do_sample=False, num_beams=self.num_beams)
        return kwargs


def embedding_shape(model, image_size: int) -> tuple[int, int]:
    """(tokens, dim) of the BLIP vision encoder's last hidden state at ``image_size`` px: (226, 768) for BLIP base at 240."""
    from models.zoo import blip_num_tokens

    return blip_num_tokens(model, image_size), int(model.config.vision_config.hidden_size)


def check_embedding(array: np.ndarray, shape: tuple[int, int], name: str = "BLIP embedding") -> np.ndarray:
    """Return ``array`` as (tokens, dim) float32, accepting a flattened vector; raise on a wrong size."""
    return as_stored_shape(array, shape, name, "the BLIP model expects")


def prompt_ids(processor, model, prompt: str) -> torch.Tensor:
    """Prompt token ids (1, n) as BLIP's generate builds them: BOS first, trailing SEP dropped."""
    ids = processor.tokenizer(prompt, return_tensors="pt").input_ids.clone()  # (1, n + 1)
    ids[:, 0] = model.config.text_config.bos_token_id
    return ids[:, :-1]


def caption_embeddings(model, processor, embeddings: np.ndarray | torch.Tensor, settings: CaptionSettings | None = None, batch_size: int = 16) -> list[str]:
    """Captions for image embeddings (B, tokens, dim), one string per row, prompt removed."""
    settings = settings or CaptionSettings()
    states = torch.as_tensor(np.asarray(embeddings) if isinstance(embeddings, np.ndarray) else embeddings)
    if states.ndim != 3:
        raise ValueError(f"Expected BLIP embeddings (batch, tokens, dim), found {tuple(states.shape)}.")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    prompt = prompt_ids(processor, model, settings.prompt).to(device)
    text = model.config.text_config
    captions: list[str] = []
    model.eval()
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(settings.seed)
        for start in range(0, states.shape[0], batch_size):
            chunk = states[start : start + batch_size].to(device=device, dtype=dtype)  # (b, T, D)
            ids = prompt.repeat(chunk.shape[0], 1)
            out = model.text_decoder.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                encoder_hidden_states=chunk,
                encoder_attention_mask=torch.ones(chunk.shape[:2], dtype=torch.long, device=device),
                eos_token_id=text.sep_token_id,
                pad_token_id=text.pad_token_id,
                **settings.generate_kwargs(),
            )
            captions += [c.strip() for c in processor.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)]
    return [finish_caption(c, settings) for c in captions]


def finish_caption(caption: str, settings: CaptionSettings) -> str:
    """A decoded caption after the settings' text rules ("/" -> " " when ``slash_to_space``)."""
    return caption.replace("/", " ").strip() if settings.slash_to_space else caption


def strip_prompt(caption: str, prompt: Sequence[str] | str = DEFAULT_PROMPT) -> str:
    """Remove a leading caption prompt (case-insensitive) from a caption written elsewhere."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    text = caption.strip()
    for p in prompts:
        p = p.strip()
        if p and text.lower().startswith(p.lower()):
            return text[len(p) :].strip()
    return text
