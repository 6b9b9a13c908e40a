"""Target and caption recipes: this project's default, and the original Brain Netflix code's.

A recipe is one switch (``--recipe``) over settings that otherwise each have their own flag:
the extractors and reconstruction read the defaults of those flags from the chosen recipe,
and a flag given explicitly still wins. The recipe name is part of the recorded settings of
every target folder (``utils.provenance``), so targets of two recipes are never mixed.

| setting | default | original | why the default differs |
|---|---|---|---|
| frame_sampling | ``round`` | ``floor`` | rounded linspace indices are symmetric (the last frame is always used); the original floors ``linspace(0, T-1, 15)`` |
| resize_antialias | True | False | antialiased bilinear resizing avoids aliasing on downscaled frames; the original resized without antialias |
| blip_normalize | True | False | BLIP was trained on mean/std-normalised pixels (its processor normalises); the original fed [0, 1] pixels |
| latent | ``mean`` | ``sample`` | the posterior mean is deterministic and noise-free; the original took ``latent_dist.sample()`` |
| z_dtype | ``float32`` | ``float16`` | float32 keeps the VAE's precision; the original stored float16 |
| caption_beams | 3 | 1 | beam search gives more fluent captions; the original decoded greedily |
| caption_slash_to_space | False | True | the original replaced "/" in captions with a space |
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

FRAME_SAMPLING = ("round", "floor")
Z_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Recipe:
    """The settings a recipe fixes (see the module table)."""

    name: str
    frame_sampling: str
    resize_antialias: bool
    blip_normalize: bool
    latent: str
    z_dtype: str
    caption_beams: int
    caption_slash_to_space: bool

    def flags(self) -> dict[str, object]:
        """``{flag dest: value}`` for ``parser.set_defaults`` (every field but the name)."""
        return {k: v for k, v in asdict(self).items() if k != "name"}


RECIPES: dict[str, Recipe] = {
    "default": Recipe("default", "round", True, True, "mean", "float32", 3, False),
    "original": Recipe("original", "floor", False, False, "sample", "float16", 1, True),
}
DEFAULT_RECIPE = "default"


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a ValueError lists the known ones."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe={name!r}; use one of {sorted(RECIPES)}.")
    return RECIPES[name]
