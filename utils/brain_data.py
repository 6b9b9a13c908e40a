"""Torch-free assembly of fMRI trial matrices across subjects and datasets for training.

A ``Source`` is one prepared subject (memory-mapped betas + trials table, from
``utils.prepare``) with its normalisation statistics. A ``TrialSet`` is a list of items over
sources, each item one trial or the mean of one stimulus's repeats; indexing it with a list
of item ids returns a float32 batch (B, 1, V') already padded and z-scored, so it plugs into
``torch.utils.data.DataLoader(batch_size=None, sampler=<list of id lists>)``.

The published MBM input pipeline (DATA_FORMATS section 5) is the default: pad the vertices by
wrap-around to a multiple of the patch size (13156 -> 13168), z-score with one global mean and
std per subject computed on its train trials. Alternatives: ``pad="zero"``;
``norm="vertex"`` (per-vertex train mean/std) or ``norm="none"``.

For contrastive training, ``target_tables`` / ``item_targets`` give each item its
per-stimulus targets and ``ItemsWithTargets`` yields (inputs, targets) batches;
``single_trials`` lists every prepared trial of a subject (the rows of exported embeddings).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.datasets import check_subjects, find_subject_folder, get_spec
from utils.prepare import Prepared, load_prepared
from utils.rois import DEFAULT_ROI_SET
from utils.targets import check_same_recipe, load_targets

PAD_MODES = ("wrap", "zero")
NORM_MODES = ("global", "vertex", "none")
INPUT_MODES = ("trials", "averaged")
_CHUNK = 512


def padded_length(n_vertices: int, patch_size: int) -> int:
    """Smallest multiple of ``patch_size`` >= ``n_vertices`` (13156, 16 -> 13168)."""
    return -(-n_vertices // patch_size) * patch_size


def pad_vertices(x: np.ndarray, patch_size: int, mode: str = "wrap") -> np.ndarray:
    """(N, V) -> (N, V') with V' a multiple of ``patch_size``; wrap appends the first vertices."""
    if mode not in PAD_MODES:
        raise ValueError(f"Unknown pad={mode!r}. Use one of {PAD_MODES}.")
    extra = padded_length(x.shape[1], patch_size) - x.shape[1]
    if extra == 0:
        return x
    if extra > x.shape[1]:
        raise ValueError(f"Cannot pad {x.shape[1]} vertices to a multiple of patch_size={patch_size}.")
    tail = x[:, :extra] if mode == "wrap" else np.zeros((x.shape[0], extra), dtype=x.dtype)
    return np.concatenate([x, tail], axis=1)


@dataclass
class NormStats:
    """z-score statistics: mean and std, scalars (``global``) or (V,) arrays (``vertex``)."""

    mode: str
    mean: np.ndarray
    std: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(N, V) -> (N, V) float32 z-scored."""
        if self.mode == "none":
            return x.astype(np.float32, copy=False)
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready summary (vertex statistics are summarised, not stored)."""
        if self.mode == "vertex":
            return {"mode": self.mode, "mean_of_means": float(self.mean.mean()), "mean_of_stds": float(self.std.mean())}
        return {"mode": self.mode, "mean": float(self.mean), "std": float(self.std)}


def compute_stats(betas: np.ndarray, rows: np.ndarray, mode: str = "global") -> NormStats:
    """Statistics of ``betas[rows]`` (T, V), streamed in chunks with float64 accumulators."""
    if mode not in NORM_MODES:
        raise ValueError(f"Unknown norm={mode!r}. Use one of {NORM_MODES}.")
    if mode == "none":
        return NormStats(mode, np.float64(0.0), np.float64(1.0))
    if len(rows) == 0:
        raise ValueError("Cannot compute normalisation statistics from zero train trials.")
    total = np.zeros(betas.shape[1])
    total_sq = np.zeros(betas.shape[1])
    for start in range(0, len(rows), _CHUNK):
        chunk = np.asarray(betas[np.sort(rows[start : start + _CHUNK])], dtype=np.float64)
        total += chunk.sum(axis=0)
        total_sq += (chunk**2).sum(axis=0)
    if mode == "global":
        count = len(rows) * betas.shape[1]
        mean = total.sum() / count
        var = total_sq.sum() / count - mean**2
        return NormStats(mode, np.float64(mean), np.float64(np.sqrt(var) if var > 0 else 1.0))
    mean = total / len(rows)
    var = total_sq / len(rows) - mean**2
    return NormStats(mode, mean.astype(np.float32), np.where(var > 0, np.sqrt(np.maximum(var, 0)), 1.0).astype(np.float32))


@dataclass
class Source:
    """One prepared subject and its input pipeline."""

    dataset: str
    subject: int
    folder: str
    prepared: Prepared
    stats: NormStats
    patch_size: int
    pad: str = "wrap"

    @property
    def name(self) -> str:
        """``<dataset>/<subNN>``."""
        return f"{self.dataset}/{self.folder}"

    @property
    def n_vertices(self) -> int:
        """Vertices before padding."""
        return int(self.prepared.betas.shape[1])

    def rows(self, split: str) -> np.ndarray:
        """Trial rows of ``split`` (``train``, ``test`` or ``all``) in table order."""
        if split == "all":
            return np.arange(len(self.prepared.trials))
        return np.flatnonzero(self.prepared.trials.split == split)

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """Model inputs of trial ``rows``: (len(rows), V') float32, normalised then padded."""
        order = np.argsort(rows)
        x = np.empty((len(rows), self.n_vertices), dtype=np.float32)
        x[order] = self.prepared.betas[np.asarray(rows)[order]]
        return pad_vertices(self.stats.apply(x), self.patch_size, self.pad)


def load_sources(
    data_root: str | Path | None,
    datasets: list[str],
    subjects: list[str] | None,
    patch_size: int,
    norm: str = "global",
    pad: str = "wrap",
    roi_set: str = DEFAULT_ROI_SET,
) -> list[Source]:
    """Every prepared subject of ``datasets`` (``subjects`` applies to each), stats from train rows.

    Raises on an empty selection and when the sources disagree on the vertex count.
    """
    if pad not in PAD_MODES:
        raise ValueError(f"Unknown pad={pad!r}. Use one of {PAD_MODES}.")
    if not datasets:
        raise ValueError("Empty dataset selection: give at least one --datasets name.")
    sources = []
    for dataset in datasets:
        spec = get_spec(dataset)
        for subject in check_subjects(spec, subjects):
            prepared = load_prepared(data_root, dataset, subject, roi_set)
            folder = find_subject_folder(data_root, dataset, subject)
            train_rows = np.flatnonzero(prepared.trials.split == "train")
            sources.append(Source(dataset, subject, folder, prepared, compute_stats(prepared.betas, train_rows, norm), patch_size, pad))
    if not sources:
        raise ValueError(f"Empty selection: datasets {datasets} with subjects {subjects} gave no prepared subject.")
    counts = {s.name: s.n_vertices for s in sources}
    if len(set(counts.values())) > 1:
        raise ValueError(f"The selected subjects disagree on the vertex count ({counts}); use one ROI set for all.")
    return sources


def holdout_stimuli(stimuli: list[str], fraction: float, seed: int, key: str = "") -> set[str]:
    """A deterministic ``fraction`` of distinct ``stimuli`` held out (by seed and ``key``, not order)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction={fraction!r} must be in [0, 1).")
    unique = sorted(set(stimuli))
    n = int(round(fraction * len(unique)))
    if n == 0:
        return set()
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return {unique[i] for i in rng.choice(len(unique), size=n, replace=False)}


@dataclass
class TrialSet:
    """Items over sources: ``items[i] = (source index, trial rows averaged into that item)``."""

    sources: list[Source]
    items: list[tuple[int, np.ndarray]] = field(default_factory=list)
    stimuli: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_voxels(self) -> int:
        """Model input length (padded)."""
        return padded_length(self.sources[0].n_vertices, self.sources[0].patch_size)

    def __getitem__(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Batch of items ``ids`` -> (B, 1, V') float32."""
        ids = np.atleast_1d(np.asarray(ids))
        out = np.empty((len(ids), 1, self.num_voxels), dtype=np.float32)
        by_source: dict[int, list[int]] = {}
        for pos, item in enumerate(ids):
            by_source.setdefault(self.items[item][0], []).append(pos)
        for src, positions in by_source.items():
            rows = [self.items[ids[p]][1] for p in positions]
            flat = np.concatenate(rows)
            x = self.sources[src].inputs(flat)  # (sum of rows, V')
            bounds = np.cumsum([0] + [len(r) for r in rows])
            for p, lo, hi in zip(positions, bounds[:-1], bounds[1:], strict=True):
                out[p, 0] = x[lo:hi].mean(axis=0)
        return out


def build_items(
    sources: list[Source], splits: tuple[str, ...], mode: str = "trials", exclude: dict[str, set[str]] | None = None,
    only: dict[str, set[str]] | None = None,
) -> TrialSet:
    """A TrialSet of every trial (``trials``) or every stimulus mean (``averaged``) of ``splits``.

    ``exclude`` / ``only`` map a source name to stimuli to leave out / to keep.
    """
    if mode not in INPUT_MODES:
        raise ValueError(f"Unknown input mode={mode!r}. Use one of {INPUT_MODES}.")
    out = TrialSet(sources)
    for index, source in enumerate(sources):
        rows = np.concatenate([source.rows(split) for split in splits]) if splits else np.arange(0)
        names = source.prepared.trials.stimulus
        skip = (exclude or {}).get(source.name, set())
        keep = (only or {}).get(source.name)
        rows = np.asarray([r for r in rows if names[r] not in skip and (keep is None or names[r] in keep)], dtype=np.int64)
        if mode == "trials":
            out.items += [(index, np.asarray([r])) for r in rows]
            out.stimuli += [names[r] for r in rows]
            continue
        groups: dict[str, list[int]] = {}
        for r in rows:
            groups.setdefault(names[r], []).append(int(r))
        out.items += [(index, np.asarray(g)) for g in groups.values()]
        out.stimuli += list(groups)
    return out


def epoch_batches(
    n_items: int, batch_size: int, epoch: int, seed: int, num_processes: int = 1, process_index: int = 0
) -> list[list[int]]:
    """This process's batches for ``epoch``: a seeded permutation, wrapped to whole global batches.

    Every process gets the same number of batches (DistributedSampler-style wrap-around), so
    multi-process training never waits on a missing batch.
    """
    if n_items < 1:
        raise ValueError("No training items: the selection is empty.")
    perm = np.random.default_rng([seed, epoch]).permutation(n_items)
    global_batch = batch_size * num_processes
    n_steps = -(-n_items // global_batch)
    perm = np.resize(perm, n_steps * global_batch)  # wraps around
    mine = perm.reshape(n_steps, num_processes, batch_size)[:, process_index]
    return [row.tolist() for row in mine]


def steps_per_epoch(n_items: int, batch_size: int, num_processes: int = 1) -> int:
    """Optimizer steps per epoch for ``epoch_batches``."""
    return -(-n_items // (batch_size * num_processes))


def subset(trialset: TrialSet, ids: list[int] | np.ndarray) -> TrialSet:
    """A TrialSet with only the items ``ids`` (in that order)."""
    return TrialSet(trialset.sources, [trialset.items[i] for i in ids], [trialset.stimuli[i] for i in ids])


def limit_items(trialset: TrialSet, limit: int | None, seed: int) -> TrialSet:
    """At most ``limit`` items, a seeded random subset kept in original order (all when None)."""
    if limit is None or limit >= len(trialset):
        return trialset
    ids = np.sort(np.random.default_rng([seed, 7]).permutation(len(trialset))[:limit])
    return subset(trialset, ids)


def holdout_by_source(sources: list[Source], fraction: float, seed: int) -> dict[str, set[str]]:
    """Per source name, the train stimuli held out for validation (see ``holdout_stimuli``)."""
    out = {}
    for source in sources:
        names = source.prepared.trials.stimulus
        out[source.name] = holdout_stimuli([names[r] for r in source.rows("train")], fraction, seed, source.name)
    return out


def single_trials(source: Source) -> TrialSet:
    """Every prepared trial of one source, in trials-table order (one item per row)."""
    n = len(source.prepared.trials)
    return TrialSet([source], [(0, np.asarray([r])) for r in range(n)], list(source.prepared.trials.stimulus))


def target_tables(data_root: str | Path | None, sources: list[Source], targets: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """``{dataset: {stimulus: (n_targets, E)}}`` for every stimulus of the selected subjects.

    Several target names must have one size (their losses are averaged).
    """
    datasets = list(dict.fromkeys(s.dataset for s in sources))
    for target in targets:
        check_same_recipe(data_root, target, datasets)
    tables: dict[str, dict[str, np.ndarray]] = {}
    for dataset in datasets:
        stimuli = sorted({stim for s in sources if s.dataset == dataset for stim in s.prepared.trials.stimulus})
        per_target = [load_targets(data_root, dataset, t, stimuli, pool=True)[0] for t in targets]
        dims = {t: m.shape[1] for t, m in zip(targets, per_target, strict=True)}
        if len(set(dims.values())) > 1:
            raise ValueError(f"--targets {targets} of {dataset} have different sizes {dims}; align to targets of one size.")
        stacked = np.stack(per_target, axis=1)  # (S, n_targets, E)
        tables[dataset] = {stim: stacked[i] for i, stim in enumerate(stimuli)}
    return tables


def item_targets(data: TrialSet, tables: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """Targets (n_items, n_targets, E) float32 of every item of ``data``."""
    values = np.stack([tables[data.sources[s].dataset][stim] for (s, _), stim in zip(data.items, data.stimuli, strict=True)])
    return values.astype(np.float32)


@dataclass
class ItemsWithTargets:
    """A TrialSet whose batches carry each item's targets: ids -> ((B, 1, V'), (B, n_targets, E))."""

    trials: TrialSet
    targets: np.ndarray  # (n_items, n_targets, E)

    def __len__(self) -> int:
        return len(self.trials)

    def __getitem__(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.trials[ids], self.targets[ids]
