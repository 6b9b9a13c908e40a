"""Every path under the data root (default ``./data``), in one place.

The layout follows ARCHITECTURE.md section 2. Functions only build paths; they never
create or read files, so they are safe to call anywhere.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_DATA_ROOT = Path("data")
# Reserved folder inside predictions/<run>/<target>/ for per-subject copies (never a stimulus).
BY_SUBJECT = "by_subject"


def root(data_root: str | Path | None = None) -> Path:
    """Resolve the data root (``./data`` when not given)."""
    return Path(data_root) if data_root is not None else DEFAULT_DATA_ROOT


def dataset_betas_dir(data_root: str | Path | None, dataset: str) -> Path:
    """``betas_cifti_<ds>/``: the parent of every subject folder of a dataset."""
    return root(data_root) / f"betas_cifti_{dataset}"


def betas_dir(data_root: str | Path | None, dataset: str, subject_folder: str) -> Path:
    """``betas_cifti_<ds>/<subNN>/``: everything about one subject's fMRI."""
    return dataset_betas_dir(data_root, dataset) / subject_folder


def pickle_path(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str, suffix: str) -> Path:
    """The downloaded Brain Netflix pickle ``prepared_allvoxel_pkl/<roi_set><suffix>.pkl``."""
    return betas_dir(data_root, dataset, subject_folder) / "prepared_allvoxel_pkl" / f"{roi_set}{suffix}.pkl"


def prepared_array_path(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str) -> Path:
    """Prepared layout: one contiguous float32 ``.npy`` (n_trials, n_vertices) per subject."""
    return betas_dir(data_root, dataset, subject_folder) / f"{roi_set}.npy"


def prepared_trials_path(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str) -> Path:
    """Prepared layout: the trials table (stimulus, repeat, split), one row per array row."""
    return betas_dir(data_root, dataset, subject_folder) / f"{roi_set}_trials.csv"


def prepared_summary_path(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str) -> Path:
    """Prepared layout: ``<roi_set>_prepared.json``, the summary written last (the completion mark)."""
    return betas_dir(data_root, dataset, subject_folder) / f"{roi_set}_prepared.json"


def indiv_dir(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str, suffix: str) -> Path:
    """The original individual-file layout ``indiv_npys/<roi_set><suffix>/``."""
    return betas_dir(data_root, dataset, subject_folder) / "indiv_npys" / f"{roi_set}{suffix}"


def stimuli_dir(data_root: str | Path | None, dataset: str) -> Path:
    """``stimuli_<ds>/``: the videos (BMD and demo under ``mp4/``)."""
    return root(data_root) / f"stimuli_{dataset}"


def metadata_dir(data_root: str | Path | None, dataset: str) -> Path:
    """``metadata_<ds>/``: annotations and split lists."""
    return root(data_root) / f"metadata_{dataset}"


def targets_dir(data_root: str | Path | None, dataset: str, target: str) -> Path:
    """``target_vectors_<ds>/<target>/``: one ``<stim>.npy`` per stimulus."""
    return root(data_root) / f"target_vectors_{dataset}" / target


def target_path(data_root: str | Path | None, dataset: str, target: str, stimulus: str) -> Path:
    """One target file; HAD stimuli keep their ``<Class>/`` subfolder."""
    return targets_dir(data_root, dataset, target) / f"{stimulus}.npy"


def captions_path(data_root: str | Path | None, dataset: str) -> Path:
    """BLIP captions of every stimulus of a dataset."""
    return root(data_root) / f"target_vectors_{dataset}" / "captions.json"


def checkpoint_dir(data_root: str | Path | None, stage: str, run: str) -> Path:
    """``checkpoints/<stage>/<run>/``."""
    return root(data_root) / "checkpoints" / stage / run


def embeddings_dir(data_root: str | Path | None, run: str) -> Path:
    """``embeddings/<run>/``: one contrastive run's exported encoder outputs and manifest."""
    return root(data_root) / "embeddings" / run


def embeddings_path(data_root: str | Path | None, run: str, dataset: str, subject_folder: str) -> Path:
    """``embeddings/<run>/<ds>/subNN.npy``: encoder outputs per trial (rows = prepared trials)."""
    return embeddings_dir(data_root, run) / dataset / f"{subject_folder}.npy"


def predictions_root(data_root: str | Path | None) -> Path:
    """``predictions/``: one folder per regression run."""
    return root(data_root) / "predictions"


def predictions_run_dir(data_root: str | Path | None, run: str) -> Path:
    """``predictions/<run>/``: one regression run (per-target folders, metrics, manifest)."""
    return predictions_root(data_root) / run


def regression_metrics_path(data_root: str | Path | None, run: str) -> Path:
    """``predictions/<run>/metrics.json``: regress.py's metrics of one run."""
    return predictions_run_dir(data_root, run) / "metrics.json"


def predictions_dir(data_root: str | Path | None, run: str, target: str) -> Path:
    """``predictions/<run>/<target>/``: one ``<stim>.npy`` per predicted stimulus."""
    return predictions_run_dir(data_root, run) / target


def prediction_path(data_root: str | Path | None, run: str, target: str, stimulus: str) -> Path:
    """``predictions/<run>/<target>/<stim>.npy``; HAD stimuli keep their ``<Class>/`` subfolder."""
    return predictions_dir(data_root, run, target) / f"{stimulus}.npy"


def subject_predictions_dir(data_root: str | Path | None, run: str, target: str, dataset: str, subject_folder: str) -> Path:
    """``predictions/<run>/<target>/by_subject/<ds>/subNN/``: one of several test subjects."""
    return predictions_dir(data_root, run, target) / BY_SUBJECT / dataset / subject_folder


def reconstructions_dir(data_root: str | Path | None, run: str) -> Path:
    """``reconstructions/<run>/`` with ``mp4/``, ``gif/`` and ``captions.json``."""
    return root(data_root) / "reconstructions" / run


def evaluation_dir(data_root: str | Path | None, run: str) -> Path:
    """``evaluation/<run>/`` with metrics.json, metrics.md, report.html and figures/."""
    return root(data_root) / "evaluation" / run
