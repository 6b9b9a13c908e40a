"""Masked brain modeling (MBM): a 1-D masked autoencoder over fMRI patches ("MAE for fMRI").

The state-dict keys follow the published per-subject BMD MBM checkpoints
(DATA_FORMATS.md section 5), so a ``sub-XX.pth`` loads with ``strict=True``:

``patch_embed.proj`` (Conv1d, 1 channel, kernel = stride = patch_size), ``cls_token``,
``pos_embed`` (fixed 1-D sin-cos, num_patches + 1), ``blocks.{i}.{norm1,attn.qkv,attn.proj,
norm2,mlp.fc1,mlp.fc2}``, ``norm``, ``decoder_embed``, ``mask_token``, ``decoder_pos_embed``,
``decoder_blocks.{i}.*``, ``decoder_norm``, ``decoder_pred`` (to patch_size values).

Input: (N, 1, V) with V a multiple of ``patch_size`` (wrap-padded, z-scored; see
``utils.brain_data``). Masking is per-sample random (argsort of uniform noise); the loss is
the MSE on masked patches only. Model sizes per preset live in ``models.zoo.MBM_SIZES``
(``zoo.mbm_config``); checkpoints are safetensors plus a JSON config
(``models.training.save_checkpoint`` writes them, ``load_mbm`` reads them).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.training import load_state_strict, read_safetensors
from utils import layout
from utils.io import read_json

# Parts of the published sub-XX.pth checkpoints that the MBM does not have.
IGNORED_KEY_PREFIXES = ("nature_img_",)


@dataclass(frozen=True)
class MBMConfig:
    """Architecture of a MaskedBrainModel; ``num_voxels`` is the (padded) input length."""

    num_voxels: int
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 1.0
    mask_ratio: float = 0.75

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.num_voxels < self.patch_size or self.num_voxels % self.patch_size:
            raise ValueError(
                f"num_voxels={self.num_voxels} must be a positive multiple of patch_size={self.patch_size} "
                "(pad the vertices first, see utils.brain_data.pad_vertices)."
            )
        for dim, heads, name in ((self.embed_dim, self.num_heads, "embed_dim"), (self.decoder_embed_dim, self.decoder_num_heads, "decoder_embed_dim")):
            if heads < 1 or dim % heads or dim % 2:
                raise ValueError(f"{name}={dim} must be even and divisible by its number of heads ({heads}).")
        check_mask_ratio(self.mask_ratio)

    @property
    def num_patches(self) -> int:
        """Tokens per sample (without the cls token)."""
        return self.num_voxels // self.patch_size


def check_mask_ratio(ratio: float) -> float:
    """Return ``ratio`` when 0 <= ratio < 1, else raise naming the parameter."""
    if not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"mask_ratio={ratio!r} must be in [0, 1).")
    return float(ratio)


def sincos_pos_embed(dim: int, length: int, cls_token: bool = True) -> np.ndarray:
    """Fixed 1-D sin-cos positions (MAE): (length [+1], dim) float32, a zero row first for cls."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))  # (D/2,)
    out = np.arange(length, dtype=np.float64)[:, None] * omega[None]  # (L, D/2)
    emb = np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (L, D)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb.astype(np.float32)


class PatchEmbed1D(nn.Module):
    """(N, 1, V) -> (N, L, D) with a Conv1d of kernel = stride = patch_size."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Same result as self.proj(x).transpose(1, 2), computed as one matmul over the
        # non-overlapping patches (much faster than a 1-channel conv on CPU).
        weight = self.proj.weight  # (D, 1, p)
        patches = x.reshape(x.shape[0], -1, weight.shape[-1])  # (N, L, p)
        return F.linear(patches, weight.reshape(weight.shape[0], -1), self.proj.bias)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (qkv with bias)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, H, L, D/H)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MaskedBrainModel(nn.Module):
    """The MBM masked autoencoder; see the module docstring for keys and input."""

    def __init__(self, config: MBMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = PatchEmbed1D(c.patch_size, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.register_buffer("pos_embed", torch.from_numpy(sincos_pos_embed(c.embed_dim, c.num_patches))[None])
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.num_heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.embed_dim)
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.register_buffer(
            "decoder_pos_embed", torch.from_numpy(sincos_pos_embed(c.decoder_embed_dim, c.num_patches))[None]
        )
        self.decoder_blocks = nn.ModuleList(
            Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio) for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patch_size)
        self._init_weights()

    def _init_weights(self) -> None:
        """MAE initialisation: xavier for linear layers and the patch projection, N(0, .02) tokens."""
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, V) -> (N, L, p)."""
        return x.reshape(x.shape[0], self.config.num_patches, self.config.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, L, p) -> (N, 1, V)."""
        return patches.reshape(patches.shape[0], 1, -1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise when ``x`` is not (N, 1, num_voxels)."""
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] != self.config.num_voxels:
            raise ValueError(
                f"MBM input must be (N, 1, {self.config.num_voxels}) (num_voxels of the checkpoint), "
                f"found {tuple(x.shape)}; the voxel count of the data does not match the model."
            )

    @staticmethod
    def random_masking(
        x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample random masking by argsort of uniform noise (drawn here unless ``noise`` (N, L) is given).

        x (N, L, D) -> kept (N, L_keep, D), mask (N, L) with 1 = masked, ids_restore (N, L).
        """
        n, length, dim = x.shape
        len_keep = int(length * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(n, length, device=x.device, generator=generator)  # (N, L)
        elif tuple(noise.shape) != (n, length):
            raise ValueError(f"mask noise must be (N, L) = {(n, length)}, found {tuple(noise.shape)}.")
        ids_shuffle = torch.argsort(noise, dim=1)  # small noise = kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, dim))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :len_keep] = 0
        return kept, torch.gather(mask, 1, ids_restore), ids_restore

    def forward_encoder(
        self, x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, 1, V) -> latent (N, 1 + L_keep, D) (normed, cls first), mask (N, L), ids_restore (N, L)."""
        self.check_input(x)
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]  # (N, L, D)
        tokens, mask, ids_restore = self.random_masking(tokens, mask_ratio, generator, noise)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (N, 1 + L_keep, D), ids_restore (N, L) -> predicted patches (N, L, p)."""
        x = self.decoder_embed(latent)  # (N, 1 + L_keep, Dd)
        n, length = ids_restore.shape
        masked = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], masked], dim=1)  # (N, L, Dd) in shuffled order
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE over masked patches only: x (N, 1, V), pred (N, L, p), mask (N, L) -> scalar."""
        per_patch = ((pred.float() - self.patchify(x).float()) ** 2).mean(dim=-1)  # (N, L)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(
        self, x: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, 1, V) -> (loss scalar, pred (N, L, p), mask (N, L)); ratio from the config by default.

        noise: the masking noise (N, L) (default: drawn from ``generator`` or the global RNG).
        """
        ratio = self.config.mask_ratio if mask_ratio is None else check_mask_ratio(mask_ratio)
        latent, mask, ids_restore = self.forward_encoder(x, ratio, generator, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(x, pred, mask), pred, mask

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Unmasked encoder output: x (N, 1, V) -> tokens (N, 1 + L, D), normed, cls first."""
        self.check_input(x)
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of the patch tokens of the unmasked encoder: (N, 1, V) -> (N, D)."""
        return self.encode(x)[:, 1:].mean(dim=1)


# ----------------------------------------------------------------------------- checkpoints


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of ``<prefix>.{i}.`` blocks in a state dict."""
    ids = {int(k[len(prefix) + 1 :].split(".")[0]) for k in state if k.startswith(prefix + ".")}
    return max(ids) + 1 if ids else 0


def config_from_published(ns: SimpleNamespace, state: dict[str, torch.Tensor], source: str = "checkpoint") -> MBMConfig:
    """MBMConfig from a published ``sub-XX.pth`` config namespace (depths the config lacks come from the keys)."""
    attrs = vars(ns)

    def pick(*names: str, default: Any = None) -> Any:
        for name in names:
            if attrs.get(name) is not None:
                return attrs[name]
        if default is None:
            raise ValueError(f"{source}: its config has none of {list(names)}; found attributes {sorted(attrs)}.")
        return default

    mlp_default = None
    if "blocks.0.mlp.fc1.weight" in state:
        hidden, dim = state["blocks.0.mlp.fc1.weight"].shape
        mlp_default = hidden / dim
    return MBMConfig(
        num_voxels=int(pick("num_voxels")),
        patch_size=int(pick("patch_size", default=MBMConfig.patch_size)),
        embed_dim=int(pick("embed_dim", "embedding_dim")),
        depth=int(pick("depth", default=_count_blocks(state, "blocks") or None)),
        num_heads=int(pick("num_heads")),
        decoder_embed_dim=int(pick("decoder_embed_dim")),
        decoder_depth=int(pick("decoder_depth", default=_count_blocks(state, "decoder_blocks") or None)),
        decoder_num_heads=int(pick("decoder_num_heads")),
        mlp_ratio=float(pick("mlp_ratio", default=mlp_default)),
        mask_ratio=float(pick("mask_ratio", default=MBMConfig.mask_ratio)),
    )


def mbm_config_from_dict(values: dict[str, Any], source: str) -> MBMConfig:
    """MBMConfig from the ``model`` section of a config.json, naming unknown fields."""
    names = {f.name for f in fields(MBMConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{source}: unknown model config field(s) {unknown}; known: {sorted(names)}.")
    return MBMConfig(**values)


def resolve_checkpoint(path: str | Path, script: str = "train_mbm.py") -> tuple[Path, Path | None]:
    """(weights file, config.json or None for a published .pth) from a run folder or a file.

    A run folder means its ``best`` weights, never silently its ``last``: a folder without
    best.safetensors raises naming it and the command (``script``) that makes it again.
    """
    path = Path(path)
    if path.is_dir():
        best, last = layout.weights_path(path, "best"), layout.weights_path(path, "last")
        if best.exists():
            return best, layout.config_path(path)
        remake = f"`python {script} --run {path.name} --overwrite` (with the flags of that run) trains it again"
        if last.exists():
            raise FileNotFoundError(
                f"Missing {best}: the folder holds only {last.name} (an unfinished run, or best was deleted). Finish the run "
                f"with --resume, or {remake}; to use the last weights, give {last} itself."
            )
        raise FileNotFoundError(f"{path} holds no {best.name}: {remake}, or run `python {script} --run {path.name}` first.")
    if not path.exists():
        raise FileNotFoundError(f"Missing MBM checkpoint {path}: train one with `python train_mbm.py --run NAME` or give a published sub-XX.pth.")
    if path.suffix == ".safetensors":
        return path, layout.config_path(path.parent)
    return path, None


def resolve_mbm_run(name: str | None, data_root: str | Path | None, preset: str) -> Path | None:
    """The MBM checkpoint ``--mbm NAME`` means: a file or folder, else the train_mbm.py run NAME (default: ``preset``).

    ``none`` means a random encoder (returns None).
    """
    if name == "none":
        return None
    name = name or preset
    if Path(name).exists():
        return Path(name)
    run_dir = layout.checkpoint_dir(data_root, "mbm", name)
    if run_dir.exists():
        return run_dir
    raise FileNotFoundError(
        f"No MBM checkpoint {name!r}: it is neither a file nor {run_dir}. Run `python train_mbm.py{layout.root_flag(data_root)} --preset {preset} "
        f"--run {name}` first, give a published sub-XX.pth, or pass --mbm none to start from a random encoder."
    )


def load_mbm(path: str | Path) -> tuple[MaskedBrainModel, dict[str, Any]]:
    """Load an MBM (ours: folder or .safetensors with config.json; published: sub-XX.pth) strictly.

    Returns the model (CPU, eval mode) and its full config dict: ``model`` (MBMConfig fields)
    and ``data`` (input pipeline: pad, norm, n_vertices; the published pipeline for a .pth).
    """
    weights, config_path = resolve_checkpoint(path)
    if config_path is None:
        from utils.safe_pickle import load_mbm_checkpoint

        ns, state = load_mbm_checkpoint(weights)
        model_config = config_from_published(ns, state, str(weights))
        config = {"model": asdict(model_config), "data": {"pad": "wrap", "norm": "global", "n_vertices": None}, "source": str(weights)}
    else:
        if not config_path.exists():
            raise FileNotFoundError(f"Missing {config_path} beside {weights}: the checkpoint carries its config there.")
        config = read_json(config_path, remake="rerun `python train_mbm.py --run NAME --overwrite` to make the checkpoint again")
        if "model" not in config:
            raise ValueError(f"{config_path}: expected a 'model' section, found keys {sorted(config)}.")
        model_config = mbm_config_from_dict(config["model"], str(config_path))
        state = read_safetensors(weights)
    model = MaskedBrainModel(model_config)
    load_state_strict(model, state, str(weights), IGNORED_KEY_PREFIXES)
    return model.eval(), config


def with_mask_ratio(config: MBMConfig, mask_ratio: float | None) -> MBMConfig:
    """A copy of ``config`` with another mask ratio (unchanged when None)."""
    return config if mask_ratio is None else replace(config, mask_ratio=check_mask_ratio(mask_ratio))


@torch.no_grad()
def masked_loss(
    model: MaskedBrainModel, data: Any, batch_size: int, device: torch.device | str, mask_ratio: float | None = None,
    seed: int = 0, autocast: Any = None,
) -> float:
    """Mean masked-patch loss over every item of ``data`` (indexable by id lists -> (B, 1, V)).

    The masks come from a generator seeded with ``seed``, so the number is comparable across
    epochs and runs. ``autocast`` is an optional context-manager factory (mixed precision).
    """
    import contextlib

    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        ids = list(range(start, min(start + batch_size, len(data))))
        x = torch.as_tensor(data[ids], device=device)
        with autocast() if autocast is not None else contextlib.nullcontext():
            loss, _, _ = model(x, mask_ratio, generator=generator)
        total += float(loss) * len(ids)
        count += len(ids)
    model.train(was_training)
    return total / max(count, 1)
