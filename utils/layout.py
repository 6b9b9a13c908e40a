"""Every path under the data root (default ``./data``), in one place.

The layout follows ARCHITECTURE.md section 2. Functions only build paths; they never
create or read files, so they are safe to call anywhere.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

DEFAULT_DATA_ROOT = Path("data")
# Reserved folder inside predictions/<run>/<target>/ for per-subject copies (never a stimulus).
BY_SUBJECT = "by_subject"

# ----------------------------------------------------------------------------- names that become paths
#
# Every name that becomes part of a path (run, output-run, method, target and stage names from flags;
# stimulus names from trials tables, annotations, split lists and folders) passes one of the checks below
# inside the path builders of this module, so no name can leave the folder it is meant for.

# Run-like names: one path component of safe characters, starting with a letter or digit (so never "."
# or ".." or a hidden file), short enough that the longest suffix a stage or the runner appends
# (``_z-pred_c_zeroscope-gt``, ``_clip``, ...) keeps a file name far below the usual 255-byte limit.
MAX_NAME_LENGTH = 100
NAME_SUFFIX_ROOM = 60  # derived folder names (a run name plus a stage's suffix) may be this much longer
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
NAME_RULE = "letters, digits and . _ + = -, starting with a letter or digit"
# Stimulus names: a relative path of one or two components (HAD keeps ``<Class>/<clip>``), none of
# them empty, "." or "..", hidden, or holding a backslash, NUL or another control character.
MAX_STIMULUS_COMPONENT = 200
_BAD_STIMULUS_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")


def check_name(name: str, what: str = "run name", max_length: int = MAX_NAME_LENGTH) -> str:
    """``name`` when it is one safe folder name (see ``NAME_RULE``) of at most ``max_length`` characters;
    else ValueError naming ``what`` (e.g. ``--run``), the rule and what was found."""
    if isinstance(name, str) and _NAME_RE.fullmatch(name) and len(name) <= max_length:
        return name
    found = repr(name[:80]) + (f" ({len(name)} characters)" if len(name) > 80 else "") if isinstance(name, str) else type(name).__name__
    raise ValueError(f"{what} {found}: expected one folder name of {NAME_RULE}, at most {max_length} characters.")


def derived_name(name: str, what: str = "run name") -> str:
    """A folder name made from a checked name plus a stage's suffix (``<run>_clip``, ``gt_<ds>_c_zeroscope``)."""
    return check_name(name, what, MAX_NAME_LENGTH + NAME_SUFFIX_ROOM)


def check_stimulus(stimulus: str, source: str = "stimulus name") -> str:
    """``stimulus`` when it is a safe relative path of one or two components (see above); else ValueError
    naming ``source`` (the file or flag it came from). The dataset's own naming rule is checked by
    ``utils.datasets.check_stimulus``; this check alone keeps every path inside its folder."""
    parts = stimulus.split("/") if isinstance(stimulus, str) else []
    ok = 1 <= len(parts) <= 2 and all(
        p and p not in (".", "..") and not p.startswith(".") and len(p) <= MAX_STIMULUS_COMPONENT and not _BAD_STIMULUS_CHARS.search(p)
        for p in parts
    )
    if not ok:
        raise ValueError(
            f"{source}: stimulus name {str(stimulus)[:120]!r} is not a relative name of one or two parts (no '.', '..', "
            f"hidden or empty parts, no backslash or control characters, at most {MAX_STIMULUS_COMPONENT} characters a part)."
        )
    return stimulus


def root(data_root: str | Path | None = None) -> Path:
    """Resolve the data root (``./data`` when not given)."""
    return Path(data_root) if data_root is not None else DEFAULT_DATA_ROOT


def root_flag(data_root: str | Path | None) -> str:
    """`` --data-root <root>`` for a command that a message suggests; empty for the default ``./data``."""
    if data_root is None or Path(data_root) == DEFAULT_DATA_ROOT:
        return ""
    return f" --data-root {shlex.quote(str(data_root))}"


# ----------------------------------------------------------------------------- files every stage folder has


def manifest_path(directory: str | Path) -> Path:
    """``<dir>/manifest.json``: what a stage did (flags, versions, inputs, counts)."""
    return Path(directory) / "manifest.json"


def config_path(directory: str | Path) -> Path:
    """``<dir>/config.json``: the settings a checkpoint or run was made with."""
    return Path(directory) / "config.json"


def log_path(directory: str | Path) -> Path:
    """``<dir>/log.csv``: one row per training epoch."""
    return Path(directory) / "log.csv"


def weights_path(directory: str | Path, name: str) -> Path:
    """``<dir>/<name>.safetensors`` (``last``, ``best``, ``weights``)."""
    return Path(directory) / f"{name}.safetensors"


def train_state_path(directory: str | Path) -> Path:
    """``<dir>/train_state.pt``: optimizer, scheduler and progress for an exact ``--resume``."""
    return Path(directory) / "train_state.pt"


def rng_state_path(directory: str | Path, rank: int) -> Path:
    """``<dir>/rng_state_<rank>.pt``: one process's torch RNG state for an exact ``--resume``."""
    return Path(directory) / f"rng_state_{rank}.pt"


def run_config_path(directory: str | Path) -> Path:
    """``<dir>/run_config.json``: the run settings a fitted regressor belongs to."""
    return Path(directory) / "run_config.json"


def per_sample_path(directory: str | Path) -> Path:
    """``<dir>/per_sample.csv``: one row per scored stimulus."""
    return Path(directory) / "per_sample.csv"


def metrics_path(directory: str | Path) -> Path:
    """``<dir>/metrics.json``: a stage's scores."""
    return Path(directory) / "metrics.json"


def dataset_betas_dir(data_root: str | Path | None, dataset: str) -> Path:
    """``betas_cifti_<ds>/``: the parent of every subject folder of a dataset."""
    return root(data_root) / f"betas_cifti_{dataset}"


def betas_dir(data_root: str | Path | None, dataset: str, subject_folder: str) -> Path:
    """``betas_cifti_<ds>/<subNN>/``: everything about one subject's fMRI."""
    return dataset_betas_dir(data_root, dataset) / subject_folder


def pickle_path(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str, suffix: str) -> Path:
    """The downloaded Brain Netflix pickle ``prepared_allvoxel_pkl/<roi_set><suffix>.pkl``."""
    return betas_dir(data_root, dataset, subject_folder) / "prepared_allvoxel_pkl" / f"{check_name(roi_set, '--roi-set')}{suffix}.pkl"


def prepared_array_path(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str) -> Path:
    """Prepared layout: one contiguous float32 ``.npy`` (n_trials, n_vertices) per subject."""
    return betas_dir(data_root, dataset, subject_folder) / f"{check_name(roi_set, '--roi-set')}.npy"


def prepared_trials_path(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str) -> Path:
    """Prepared layout: the trials table (stimulus, repeat, split), one row per array row."""
    return betas_dir(data_root, dataset, subject_folder) / f"{check_name(roi_set, '--roi-set')}_trials.csv"


def prepared_summary_path(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str) -> Path:
    """Prepared layout: ``<roi_set>_prepared.json``, the summary written last (the completion mark)."""
    return betas_dir(data_root, dataset, subject_folder) / f"{check_name(roi_set, '--roi-set')}_prepared.json"


def indiv_dir(data_root: str | Path | None, dataset: str, subject_folder: str, roi_set: str, suffix: str) -> Path:
    """The original individual-file layout ``indiv_npys/<roi_set><suffix>/``."""
    return betas_dir(data_root, dataset, subject_folder) / "indiv_npys" / f"{check_name(roi_set, '--roi-set')}{suffix}"


def stimuli_dir(data_root: str | Path | None, dataset: str) -> Path:
    """``stimuli_<ds>/``: the videos (BMD and demo under ``mp4/``)."""
    return root(data_root) / f"stimuli_{dataset}"


def metadata_dir(data_root: str | Path | None, dataset: str) -> Path:
    """``metadata_<ds>/``: annotations and split lists."""
    return root(data_root) / f"metadata_{dataset}"


def targets_dir(data_root: str | Path | None, dataset: str, target: str) -> Path:
    """``target_vectors_<ds>/<target>/``: one ``<stim>.npy`` per stimulus."""
    return root(data_root) / f"target_vectors_{dataset}" / check_name(target, "target name")


def target_path(data_root: str | Path | None, dataset: str, target: str, stimulus: str) -> Path:
    """One target file; HAD stimuli keep their ``<Class>/`` subfolder."""
    return targets_dir(data_root, dataset, target) / f"{check_stimulus(stimulus)}.npy"


def captions_path(data_root: str | Path | None, dataset: str) -> Path:
    """BLIP captions of every stimulus of a dataset."""
    return root(data_root) / f"target_vectors_{dataset}" / "captions.json"


def annotations_path(data_root: str | Path | None, dataset: str) -> Path:
    """``metadata_<ds>/annotations.json``: BMD-format annotations (captions, labels, split)."""
    return metadata_dir(data_root, dataset) / "annotations.json"


def checkpoint_dir(data_root: str | Path | None, stage: str, run: str) -> Path:
    """``checkpoints/<stage>/<run>/``."""
    return root(data_root) / "checkpoints" / check_name(stage, "stage name") / derived_name(run)


def embeddings_dir(data_root: str | Path | None, run: str) -> Path:
    """``embeddings/<run>/``: one contrastive run's exported encoder outputs and manifest."""
    return root(data_root) / "embeddings" / derived_name(run)


def embeddings_path(data_root: str | Path | None, run: str, dataset: str, subject_folder: str) -> Path:
    """``embeddings/<run>/<ds>/subNN.npy``: encoder outputs per trial (rows = prepared trials)."""
    return embeddings_dir(data_root, run) / check_name(dataset, "dataset") / f"{check_name(subject_folder, 'subject folder')}.npy"


def embeddings_trials_path(data_root: str | Path | None, run: str, dataset: str, subject_folder: str) -> Path:
    """``embeddings/<run>/<ds>/subNN_trials.csv``: the trials table the embedding rows follow."""
    return embeddings_dir(data_root, run) / check_name(dataset, "dataset") / f"{check_name(subject_folder, 'subject folder')}_trials.csv"


def predictions_root(data_root: str | Path | None) -> Path:
    """``predictions/``: one folder per regression run."""
    return root(data_root) / "predictions"


def predictions_run_dir(data_root: str | Path | None, run: str) -> Path:
    """``predictions/<run>/``: one regression run (per-target folders, metrics, manifest)."""
    return predictions_root(data_root) / derived_name(run)


def regression_metrics_path(data_root: str | Path | None, run: str) -> Path:
    """``predictions/<run>/metrics.json``: regress.py's metrics of one run."""
    return metrics_path(predictions_run_dir(data_root, run))


def predictions_dir(data_root: str | Path | None, run: str, target: str) -> Path:
    """``predictions/<run>/<target>/``: one ``<stim>.npy`` per predicted stimulus."""
    return predictions_run_dir(data_root, run) / check_name(target, "target name")


def prediction_path(data_root: str | Path | None, run: str, target: str, stimulus: str) -> Path:
    """``predictions/<run>/<target>/<stim>.npy``; HAD stimuli keep their ``<Class>/`` subfolder."""
    return predictions_dir(data_root, run, target) / f"{check_stimulus(stimulus)}.npy"


def subject_predictions_dir(data_root: str | Path | None, run: str, target: str, dataset: str, subject_folder: str) -> Path:
    """``predictions/<run>/<target>/by_subject/<ds>/subNN/``: one of several test subjects."""
    return predictions_dir(data_root, run, target) / BY_SUBJECT / check_name(dataset, "dataset") / check_name(subject_folder, "subject folder")


def subject_prediction_path(data_root: str | Path | None, run: str, target: str, dataset: str, subject_folder: str, stimulus: str) -> Path:
    """``predictions/<run>/<target>/by_subject/<ds>/subNN/<stim>.npy``: one test subject's prediction."""
    return subject_predictions_dir(data_root, run, target, dataset, subject_folder) / f"{check_stimulus(stimulus)}.npy"


def reconstructions_dir(data_root: str | Path | None, run: str) -> Path:
    """``reconstructions/<run>/`` with ``mp4/``, ``gif/`` and ``captions.json``."""
    return reconstructions_root(data_root) / derived_name(run)


def reconstruction_captions_path(out_dir: str | Path) -> Path:
    """``<reconstruction dir>/captions.json``: the caption each clip was generated with."""
    return Path(out_dir) / "captions.json"


def reconstruction_captions_part_path(out_dir: str | Path, rank: int | str) -> Path:
    """``<reconstruction dir>/.captions.rank<rank>.json``: one process's captions before they are merged."""
    return Path(out_dir) / f".captions.rank{rank}.json"


def reconstruction_video_paths(out_dir: str | Path, stimulus: str) -> tuple[Path, Path]:
    """(``mp4/<stim>.mp4``, ``gif/<stim>.gif``) of one reconstructed clip."""
    check_stimulus(stimulus)
    return reconstruction_mp4_dir(out_dir) / f"{stimulus}.mp4", Path(out_dir) / "gif" / f"{stimulus}.gif"


def evaluation_dir(data_root: str | Path | None, run: str) -> Path:
    """``evaluation/<run>/`` with metrics.json, metrics.md, report.html and figures/."""
    return root(data_root) / "evaluation" / derived_name(run)


def report_path(out_dir: str | Path) -> Path:
    """``<evaluation dir>/report.html``: the self-contained report."""
    return Path(out_dir) / "report.html"


def metrics_markdown_path(out_dir: str | Path) -> Path:
    """``<evaluation dir>/metrics.md``: the metrics table as Markdown."""
    return Path(out_dir) / "metrics.md"


def figures_dir(out_dir: str | Path) -> Path:
    """``<evaluation dir>/figures/``: the report's PNG figures."""
    return Path(out_dir) / "figures"


def media_dir(out_dir: str | Path) -> Path:
    """``<evaluation dir>/media/``: the clips copied for the report."""
    return Path(out_dir) / "media"


def media_path(out_dir: str | Path, stimulus: str, kind: str) -> Path:
    """``<evaluation dir>/media/<stim>_<kind>.mp4``: a clip copied for the report (kind: true, pred)."""
    return media_dir(out_dir) / f"{check_stimulus(stimulus)}_{kind}.mp4"


# ----------------------------------------------------------------------------- datasets: downloads, split lists, demo


def downloads_manifest_path(data_root: str | Path | None) -> Path:
    """``<data root>/downloads_manifest.json``: size, sha256 and source of every downloaded file."""
    return root(data_root) / "downloads_manifest.json"


def split_list_path(data_root: str | Path | None, dataset: str, split: str) -> Path:
    """``metadata_<ds>/<ds>_<split>_set_per_subject.json``: per-subject stimulus lists of a split (HAD)."""
    return metadata_dir(data_root, dataset) / f"{dataset}_{split}_set_per_subject.json"


def demo_config_path(data_root: str | Path | None, dataset: str) -> Path:
    """``metadata_<ds>/demo_config.json``: the settings a synthetic dataset was made with."""
    return metadata_dir(data_root, dataset) / "demo_config.json"


def encoding_model_path(data_root: str | Path | None, dataset: str) -> Path:
    """``metadata_<ds>/encoding_model.npz``: the ground-truth encoding model of a synthetic dataset."""
    return metadata_dir(data_root, dataset) / "encoding_model.npz"


def demo_readme_path(data_root: str | Path | None, dataset: str) -> Path:
    """``metadata_<ds>/README.txt``: the plain statement that a dataset is synthetic."""
    return metadata_dir(data_root, dataset) / "README.txt"


# ----------------------------------------------------------------------------- demo models (fitted to the synthetic world)

DEMO_MODEL_FOLDERS = {  # fit step -> its save_pretrained folder under models_demo/
    "vae": "zeroscope/vae", "clip": "clip", "zeroscope": "zeroscope", "blip": "blip",
    "image_classifier": "image_classifier", "video_classifier": "video_classifier",
}


def demo_models_root(data_root: str | Path | None) -> Path:
    """``models_demo/``: the demo preset's models, fitted to the synthetic world by ``fit_demo_models.py``."""
    return root(data_root) / "models_demo"


def demo_model_dir(data_root: str | Path | None, component: str) -> Path:
    """``models_demo/<component>/``: one model in the Hugging Face ``save_pretrained`` layout (what
    ``--model-path`` points to for the real models): ``zeroscope`` (vae/, unet/, text_encoder/,
    tokenizer/, scheduler/), ``clip``, ``blip``, ``image_classifier``, ``video_classifier``."""
    return demo_models_root(data_root) / component


def demo_fit_manifest_path(data_root: str | Path | None, step: str) -> Path:
    """``models_demo/fit_<step>.json``: a fit step's settings and held-out metrics, written last (its completion record)."""
    return demo_models_root(data_root) / f"fit_{step}.json"


def demo_fit_run_dir(data_root: str | Path | None, step: str) -> Path:
    """``checkpoints/demo_fit/<step>/``: the training run of one fit step (exact resume, log.csv)."""
    return checkpoint_dir(data_root, "demo_fit", step)


def demo_fit_log_path(data_root: str | Path | None, step: str) -> Path:
    """``checkpoints/demo_fit/<step>.log``: the progress bars of a fit step run in a worker process (``--jobs``)."""
    return demo_fit_run_dir(data_root, step).parent / f"{step}.log"


# ----------------------------------------------------------------------------- reconstructions and evaluation (stages 4-5)


def reconstructions_root(data_root: str | Path | None) -> Path:
    """``reconstructions/``: one folder per reconstruction run."""
    return root(data_root) / "reconstructions"


def reconstruction_mp4_dir(out_dir: str | Path) -> Path:
    """``<reconstruction dir>/mp4/``: the reconstructed clips (a run is one when this folder exists)."""
    return Path(out_dir) / "mp4"


def figure_path(out_dir: str | Path, name: str) -> Path:
    """``<evaluation dir>/figures/<name>.png``: one figure of the report."""
    return figures_dir(out_dir) / f"{name}.png"


def rng_state_paths(directory: str | Path) -> list[Path]:
    """Every ``<dir>/rng_state_<rank>.pt`` present (one per process of the last save), sorted."""
    return sorted(Path(directory).glob("rng_state_*.pt"))


def settings_path(directory: str | Path) -> Path:
    """``<dir>/settings.json``: the settings that determined a folder's outputs (``utils.provenance``)."""
    return Path(directory) / "settings.json"


def reconstruction_frames_path(out_dir: str | Path, stimulus: str) -> Path:
    """``<reconstruction dir>/frames/<stim>.npy``: the clip's frames, lossless uint8 (F, H, W, 3); evaluation reads these."""
    return Path(out_dir) / "frames" / f"{check_stimulus(stimulus)}.npy"


def lock_path(directory: str | Path) -> Path:
    """``<dir>/.lock``: the run lock of a stage's output folder (``utils.locks``)."""
    return Path(directory) / ".lock"
