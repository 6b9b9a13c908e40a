"""Contrastive alignment of the MBM encoder to CLIP embeddings (symmetric InfoNCE).

``BrainCLIP`` = an MBM encoder (``models.mbm.MaskedBrainModel``) + a pooling step + a
projection head to the CLIP dimension, with a learnable temperature (CLIP's ``logit_scale``).

Pooling (``pool``):
- ``mean``: the global average of the unmasked encoder's patch tokens (Mind-Vis style),
  features (N, D);
- ``tokens``: each token reduced to ``token_dim`` values by a shared linear layer, then
  flattened, features (N, L * token_dim): keeps where on the cortex a signal comes from.

``clip_loss`` is the symmetric cross-entropy of CLIP with a learnable temperature;
``evaluate`` scores a model on a TrialSet (loss, top-1 retrieval, 2-way identification).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.mbm import MaskedBrainModel, mbm_config_from_dict, resolve_checkpoint
from models.training import load_state_strict, read_safetensors
from utils import layout
from utils.brain_data import Source, TrialSet, build_items, item_targets, single_trials
from utils.io import atomic_path, read_json, save_npy
from utils.metrics import n_way_identification, top_k_retrieval

POOL_MODES = ("mean", "tokens")


@dataclass(frozen=True)
class HeadConfig:
    """Projection head: pooling, token reduction width, hidden width (0 = linear), output dim."""

    out_dim: int
    pool: str = "tokens"
    token_dim: int = 8
    hidden_dim: int = 0
    dropout: float = 0.1
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.pool not in POOL_MODES:
            raise ValueError(f"Unknown pool={self.pool!r}. Use one of {POOL_MODES}.")
        if self.out_dim < 1 or self.token_dim < 1 or self.hidden_dim < 0:
            raise ValueError(f"Invalid head sizes: out_dim={self.out_dim}, token_dim={self.token_dim}, hidden_dim={self.hidden_dim}.")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} must be > 0.")


class BrainCLIP(nn.Module):
    """MBM encoder + pooling + projection head + learnable temperature."""

    def __init__(self, encoder: MaskedBrainModel, head: HeadConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.head_config = head
        dim = encoder.config.embed_dim
        if head.pool == "tokens":
            self.token_reduce = nn.Linear(dim, head.token_dim)
            features = encoder.config.num_patches * head.token_dim
        else:
            self.token_reduce = None
            features = dim
        self.feature_dim = features
        if head.hidden_dim:
            self.proj = nn.Sequential(
                nn.LayerNorm(features), nn.Dropout(head.dropout), nn.Linear(features, head.hidden_dim), nn.GELU(),
                nn.Linear(head.hidden_dim, head.out_dim),
            )
        else:
            self.proj = nn.Sequential(nn.LayerNorm(features), nn.Dropout(head.dropout), nn.Linear(features, head.out_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / head.temperature)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder output: x (N, 1, V) -> (N, feature_dim)."""
        tokens = self.encoder.encode(x)[:, 1:]  # (N, L, D), cls dropped
        if self.token_reduce is None:
            return tokens.mean(dim=1)
        return self.token_reduce(tokens).flatten(1)  # (N, L * token_dim)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 1, V) -> projected embedding (N, out_dim), not normalised."""
        return self.proj(self.features(x))

    def forward(
        self, x: torch.Tensor, recon_mask_ratio: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (N, 1, V) -> (embedding (N, out_dim), logit_scale, MBM masked loss or None).

        Everything a training step needs comes out of one call, so data-parallel wrappers
        see every trainable parameter used in ``forward``.
        """
        recon = None if recon_mask_ratio is None else self.encoder(x, recon_mask_ratio)[0]
        return self.project(x), self.logit_scale, recon

    def set_trainable(self, encoder: bool = True, decoder: bool = False) -> None:
        """Freeze or unfreeze the encoder and the MBM decoder (the decoder only serves the regulariser)."""
        for name, param in self.encoder.named_parameters():
            is_decoder = name.startswith(("decoder_", "mask_token"))
            param.requires_grad = decoder if is_decoder else encoder

    def describe(self) -> dict[str, Any]:
        """JSON-ready head config (for config.json)."""
        return asdict(self.head_config)


def clip_loss(brain: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between brain (N, E) and target (N, E) embeddings; row i pairs with row i.

    The scale is clamped at 100 like CLIP. Two rows of one stimulus in a batch need no special
    case: their targets are identical, so the loss and its gradients are the same as when
    they share the positive.
    """
    brain = F.normalize(brain.float(), dim=-1)
    target = F.normalize(target.float(), dim=-1)
    logits = logit_scale.clamp(max=math.log(100.0)).exp() * brain @ target.T  # (N, N)
    labels = torch.arange(len(brain), device=brain.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def parameter_groups(model: BrainCLIP, lr: float, encoder_lr: float, weight_decay: float, freeze_encoder: bool = False) -> list[dict]:
    """AdamW groups: the head at ``lr``, the encoder at ``encoder_lr`` (none when frozen); no decay on 1-D params."""
    groups = []
    for name, lr_value, params in (
        ("head", lr, [(n, p) for n, p in model.named_parameters() if not n.startswith("encoder.")]),
        ("encoder", encoder_lr, [] if freeze_encoder else [(n, p) for n, p in model.encoder.named_parameters() if p.requires_grad]),
    ):
        decay = [p for n, p in params if p.ndim > 1 and not n.endswith("_token")]
        no_decay = [p for n, p in params if p.ndim <= 1 or n.endswith("_token")]
        groups += [
            {"params": decay, "lr": lr_value, "weight_decay": weight_decay, "name": f"{name}_decay"},
            {"params": no_decay, "lr": lr_value, "weight_decay": 0.0, "name": f"{name}_no_decay"},
        ]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def embed(model: BrainCLIP, data: Any, ids: list[int], batch_size: int, device: torch.device | str, output: str = "features", autocast: Any = None) -> torch.Tensor:
    """Embeddings of items ``ids`` of ``data`` (indexable by id lists -> (B, 1, V)) -> (len(ids), E) float32 CPU.

    output: ``features`` (pooled encoder output) or ``projection`` (the CLIP-space embedding).
    """
    import contextlib

    if output not in ("features", "projection"):
        raise ValueError(f"Unknown output={output!r}; use 'features' or 'projection'.")
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(ids), batch_size):
        x = torch.as_tensor(data[ids[start : start + batch_size]], device=device)
        with autocast() if autocast is not None else contextlib.nullcontext():
            out = model.features(x) if output == "features" else model.project(x)
        chunks.append(out.float().cpu())
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, model.feature_dim)


def load_brainclip(path: str | Path) -> tuple[BrainCLIP, dict[str, Any]]:
    """Load a fine-tuned BrainCLIP from a run folder (best, else last) or a .safetensors beside its config.json."""
    weights, config_path = resolve_checkpoint(path, script="finetune_contrastive.py")
    if config_path is None or not config_path.exists():
        raise FileNotFoundError(f"Missing {layout.config_path(weights.parent)} beside {weights}: run `python finetune_contrastive.py` to make one.")
    config = read_json(config_path, remake=f"rerun `python finetune_contrastive.py --run {weights.parent.name} --overwrite` to make it again")
    missing = [k for k in ("model", "head") if k not in config]
    if missing:
        raise ValueError(f"{config_path}: missing section(s) {missing}; found {sorted(config)}.")
    encoder = MaskedBrainModel(mbm_config_from_dict(config["model"], str(config_path)))
    model = BrainCLIP(encoder, HeadConfig(**config["head"]))
    load_state_strict(model, read_safetensors(weights), str(weights))
    return model.eval(), config


def retrieval_metrics(pred: np.ndarray, true: np.ndarray, seed: int) -> dict[str, float]:
    """Top-1 retrieval among the given stimuli and 2-way identification, with chance levels."""
    n = len(pred)
    out = {"n_stimuli": n, "top1": float(top_k_retrieval(pred, true, 1)), "chance_top1": 1.0 / max(n, 1)}
    if n >= 2:
        out.update({"two_way": float(n_way_identification(pred, true, 2, seed=seed)), "chance_two_way": 0.5})
    return out


def evaluate(
    model: BrainCLIP, data: TrialSet, tables: dict, batch_size: int, device: torch.device | str, seed: int, autocast: Any = None
) -> dict[str, float]:
    """Contrastive loss and retrieval (projection vs first target) over every item of ``data`` ({} when empty).

    ``tables``: ``{dataset: {stimulus: (n_targets, E)}}`` (``utils.brain_data.target_tables``).
    """
    if len(data) == 0:
        return {}
    pred = embed(model, data, list(range(len(data))), batch_size, device, "projection", autocast)  # (S, E)
    targets = item_targets(data, tables)  # (S, n_targets, E)
    with torch.no_grad():
        loss = float(np.mean([
            float(clip_loss(pred, torch.from_numpy(targets[:, k]), model.logit_scale.detach().cpu()))
            for k in range(targets.shape[1])
        ]))
    return {"loss": loss, **retrieval_metrics(pred.numpy(), targets[:, 0], seed)}


def split_retrieval(
    model: BrainCLIP, source: Source, tables: dict, batch_size: int, device: torch.device | str, seed: int, autocast: Any = None
) -> dict[str, dict[str, float]]:
    """``evaluate`` on the stimulus means of one subject's test and train splits: ``{"test": ..., "train": ...}``."""
    return {
        split: evaluate(model, build_items([source], (split,), "averaged"), tables, batch_size, device, seed, autocast)
        for split in ("test", "train")
    }


def export_embeddings(
    model: BrainCLIP, source: Source, data_root: str | Path | None, run: str, roi_set: str, output: str, batch_size: int,
    device: torch.device | str, autocast: Any = None, chunk: int = 1024,
) -> Path:
    """Embeddings of every prepared trial of ``source`` -> ``embeddings/<run>/<ds>/subNN.npy`` (n_trials, E) float32.

    Rows follow the subject's prepared trials table, copied beside it first as
    ``subNN_trials.csv``; the ``.npy``, written last, marks the subject done. Returns its path.
    """
    import shutil

    from tqdm import tqdm

    trials = single_trials(source)
    ids = list(range(len(trials)))
    chunks = [
        embed(model, trials, ids[lo : lo + chunk], batch_size, device, output, autocast).numpy()
        for lo in tqdm(range(0, len(ids), chunk), desc=f"embed {source.name}", leave=False)
    ]
    with atomic_path(layout.embeddings_trials_path(data_root, run, source.dataset, source.folder)) as tmp:
        shutil.copyfile(layout.prepared_trials_path(data_root, source.dataset, source.folder, roi_set), tmp)
    path = layout.embeddings_path(data_root, run, source.dataset, source.folder)
    save_npy(path, np.concatenate(chunks).astype(np.float32))
    return path
