"""One spec per dataset: subjects, file suffix, pickle keys, naming, splits and repeats.

Everything the rest of the code knows about BMD, HAD, CC2017 and the synthetic demo lives
here (see DATA_FORMATS.md sections 2-3). Paths are built by ``utils.layout``.

Canonical stimulus names used across the project (targets, predictions, trials tables):
- BMD / demo: ``"0001"``..; HAD: ``"<Class>/<clip name>"`` (class folder, spaces kept);
- CC2017: zero-padded ``"seg1_begin-002_end-004"`` (the pickles store it unpadded).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils import layout

N_GROUP41 = 13156


@dataclass(frozen=True)
class ArraySpec:
    """One fMRI array in a subject pickle.

    key: pickle key; split: ``train``/``test`` or ``None`` when the dataset's split rule
    decides per stimulus (HAD); ndim: 3 for (stimulus, repeat, vertex), 2 for (trial, vertex);
    order_key: key of the per-row stimulus names, or ``None`` when rows are numbered;
    first_number: for numbered rows, the number of row 0 (BMD train 1, test 1001);
    ``None`` continues after the train rows (the demo, whose sizes are flags).
    """

    key: str
    split: str | None
    ndim: int
    order_key: str | None = None
    first_number: int | None = 1


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset; see the module docstring for stimulus naming."""

    name: str
    subjects: tuple[int, ...]
    suffix: str
    arrays: tuple[ArraySpec, ...]
    repeats: dict[str, int]
    stimuli_subdir: str
    video_ext: str = ".mp4"
    n_train: int = 0
    n_test: int = 0
    description: str = ""

    def array(self, key: str) -> ArraySpec:
        """The ArraySpec for pickle key ``key``."""
        for spec in self.arrays:
            if spec.key == key:
                return spec
        raise KeyError(f"Dataset {self.name!r} has no array {key!r}; known: {[a.key for a in self.arrays]}")


BMD = DatasetSpec(
    name="bmd",
    subjects=tuple(range(1, 11)),
    suffix="_betas-GLMsingle_type-typed_z=1",
    arrays=(
        ArraySpec("train_data_allvoxel", "train", 3, None, 1),
        ArraySpec("test_data_allvoxel", "test", 3, None, 1001),
    ),
    repeats={"train": 3, "test": 10},
    stimuli_subdir="mp4",
    n_train=1000,
    n_test=102,
    description="BOLD Moments: 1102 three-second videos, 10 subjects",
)

HAD = DatasetSpec(
    name="had",
    subjects=tuple(range(1, 31)),
    suffix="_betas-GLMsingle_type-typeb_z=1",
    arrays=(ArraySpec("data_allvoxel", None, 3, "stim_order"),),
    repeats={"train": 1, "test": 1},
    stimuli_subdir="",
    n_train=540,
    n_test=180,
    description="Human Actions Dataset: 720 two-second clips per subject, 180 classes, 30 subjects",
)

CC2017 = DatasetSpec(
    name="cc2017",
    subjects=(1, 2, 3),
    suffix="_estimates-TSTrialEstimates_z=1",
    arrays=(
        ArraySpec("train_data_allvoxel", "train", 2, "train_stim_order"),
        ArraySpec("test_data_allvoxel", "test", 2, "test_stim_order"),
    ),
    repeats={"train": 2, "test": 10},
    stimuli_subdir="",
    n_train=4302,
    n_test=1199,
    description="Wen et al. 2017: 2 s clips of 8 min segments, 3 subjects",
)

DEMO = DatasetSpec(
    name="demo",
    subjects=(1, 2),
    suffix=BMD.suffix,
    arrays=BMD.arrays[:1] + (ArraySpec("test_data_allvoxel", "test", 3, None, None),),
    repeats={"train": 3, "test": 10},
    stimuli_subdir="mp4",
    n_train=120,
    n_test=24,
    description="SYNTHETIC demo in BMD formats (procedural videos, known encoding model)",
)

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (BMD, HAD, CC2017, DEMO)}

CC2017_TRAIN_SEGMENTS = tuple(f"seg{i}" for i in range(1, 19))
CC2017_TEST_SEGMENTS = tuple(f"test{i}" for i in range(1, 6))
CC2017_SHORT_RUN = {"subject": 3, "test_rows": 11985}

_SUBJECT_RE = re.compile(r"^(?:sub-?)?0*(\d+)$")
_CC2017_RE = re.compile(r"^(?P<seg>(?:seg|test)\d+)_begin-(?P<b>\d+)_end-(?P<e>\d+)$")
_HAD_RE = re.compile(r"^v_(?P<cls>.+?)_id_")


def get_spec(name: str) -> DatasetSpec:
    """Look up a dataset spec by name, with an error listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"Unknown dataset={name!r}. Known datasets: {sorted(DATASETS)}.") from None


def parse_subject(text: str | int) -> int:
    """``1``, ``"01"``, ``"sub01"``, ``"sub-01"`` -> 1."""
    match = _SUBJECT_RE.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"Cannot read subject {text!r}: use a number (1), 'sub01' or 'sub-01'.")
    return int(match.group(1))


def check_subjects(spec: DatasetSpec, subjects: list[str | int] | None) -> list[int]:
    """Parse subject labels and check them against the spec (all subjects when None)."""
    if not subjects:
        return list(spec.subjects)
    parsed = [parse_subject(s) for s in subjects]
    unknown = [s for s in parsed if s not in spec.subjects]
    if unknown and spec.name != "demo":
        raise ValueError(
            f"Unknown subject(s) {unknown} for dataset {spec.name!r}: it has subjects "
            f"{spec.subjects[0]}..{spec.subjects[-1]}."
        )
    return parsed


def subject_folder(subject: int) -> str:
    """Canonical folder name ``subNN``."""
    return f"sub{subject:02d}"


def find_subject_folder(data_root: str | Path | None, dataset: str, subject: int) -> str:
    """The subject's folder on disk: ``subNN`` or ``sub-NN`` if only that one exists."""
    for name in (subject_folder(subject), f"sub-{subject:02d}"):
        if layout.betas_dir(data_root, dataset, name).exists():
            return name
    return subject_folder(subject)


def pad_cc2017(name: str) -> str:
    """``seg1_begin-2_end-4`` -> ``seg1_begin-002_end-004`` (already padded names pass)."""
    match = _CC2017_RE.match(name)
    if not match:
        raise ValueError(f"Not a CC2017 clip name: {name!r} (expected like 'seg1_begin-002_end-004').")
    return f"{match['seg']}_begin-{int(match['b']):03d}_end-{int(match['e']):03d}"


def had_class(name: str) -> str:
    """Action class of a HAD clip: from ``<Class>/...`` or from ``v_<Class>_id_...``."""
    if "/" in name:
        return name.split("/", 1)[0]
    match = _HAD_RE.match(name)
    if not match:
        raise ValueError(f"Not a HAD clip name: {name!r} (expected like 'v_Drum corps_id_<yt>_start_28.0_label_1').")
    return match["cls"]


def had_stimulus(name: str) -> str:
    """Canonical HAD stimulus ``<Class>/<clip>`` from either form."""
    return name if "/" in name else f"{had_class(name)}/{name}"


def match_key(dataset: str, stimulus: str) -> str:
    """Key for matching names across sources (HAD class spaces -> underscores; CC2017 padded)."""
    if dataset == "had":
        # Spaces occur only in the class part (YouTube ids have none), so this is class-only.
        return had_stimulus(stimulus).replace(" ", "_")
    if dataset == "cc2017":
        return pad_cc2017(stimulus)
    return stimulus


def canonical_stimulus(dataset: str, name: str) -> str:
    """Canonical project name of a stimulus as stored in a pickle's order list."""
    name = str(name)
    if dataset == "had":
        return had_stimulus(name)
    if dataset == "cc2017":
        return pad_cc2017(name)
    return name


def numbered_stimulus(number: int) -> str:
    """BMD/demo stimulus name ``NNNN``."""
    return f"{number:04d}"


def had_split(stim_order: list[str]) -> list[str]:
    """HAD rule: within each class, the first clip in ``stim_order`` is test, the rest train."""
    seen: set[str] = set()
    splits = []
    for name in stim_order:
        cls = had_class(name)
        splits.append("train" if cls in seen else "test")
        seen.add(cls)
    return splits


def cc2017_clip_names(split: str) -> list[str]:
    """All CC2017 clip names of a split by the segment rule (4302 train, 1199 test)."""
    segments = CC2017_TRAIN_SEGMENTS if split == "train" else CC2017_TEST_SEGMENTS
    names = []
    for seg in segments:
        start = 2 if seg in CC2017_TRAIN_SEGMENTS or seg == "test1" else 0
        names += [f"{seg}_begin-{t:03d}_end-{t + 2:03d}" for t in range(start, 480, 2)]
    return names


def annotations_path(data_root: str | Path | None, dataset: str) -> Path:
    """``metadata_<ds>/annotations.json`` (BMD and demo)."""
    return layout.metadata_dir(data_root, dataset) / "annotations.json"


def load_annotations(data_root: str | Path | None, dataset: str) -> dict:
    """BMD-format annotations dict keyed by stimulus name."""
    path = annotations_path(data_root, dataset)
    if not path.exists():
        hint = "python download_data.py --dataset demo" if dataset == "demo" else f"python download_data.py --dataset {dataset}"
        raise FileNotFoundError(f"Missing annotations {path}: run `{hint}` first.")
    return json.loads(path.read_text())


def list_stimuli(spec: DatasetSpec, split: str, data_root: str | Path | None = None) -> list[str]:
    """Canonical stimulus names of ``split`` (``train``, ``test`` or ``all``), sorted by rule.

    BMD and CC2017 follow fixed rules; the demo reads its annotations; HAD reads the split
    lists in ``metadata_had/`` (union over subjects) or, failing that, the stimuli folder.
    """
    if split == "all":
        return list_stimuli(spec, "train", data_root) + list_stimuli(spec, "test", data_root)
    if split not in ("train", "test"):
        raise ValueError(f"Unknown split={split!r}; use 'train', 'test' or 'all'.")
    if spec.name == "bmd":
        first = 1 if split == "train" else 1001
        count = spec.n_train if split == "train" else spec.n_test
        return [numbered_stimulus(first + i) for i in range(count)]
    if spec.name == "cc2017":
        return cc2017_clip_names(split)
    if spec.name == "demo":
        notes = load_annotations(data_root, "demo")
        return sorted(k for k, v in notes.items() if v["set"] == split)
    split_file = layout.metadata_dir(data_root, "had") / f"had_{split}_set_per_subject.json"
    if split_file.exists():
        per_subject = json.loads(split_file.read_text())
        return sorted({had_stimulus(n) for names in per_subject.values() for n in names})
    stim_dir = layout.stimuli_dir(data_root, "had")
    if not stim_dir.exists():
        raise FileNotFoundError(f"HAD split lists {split_file} and stimuli {stim_dir} are both missing: run `python download_data.py --dataset had` first.")
    raise FileNotFoundError(f"Missing {split_file}: HAD splits are per subject; run `python download_data.py --dataset had --prepare` first.")


def stimulus_path(data_root: str | Path | None, spec: DatasetSpec, stimulus: str) -> Path:
    """Video file of a canonical stimulus name (HAD: ``<Class>/<clip>.mp4``)."""
    base = layout.stimuli_dir(data_root, spec.name)
    if spec.stimuli_subdir:
        base = base / spec.stimuli_subdir
    return base / f"{stimulus}{spec.video_ext}"


def row_stimuli(
    spec: DatasetSpec, array: ArraySpec, n_rows: int, order: list[str] | np.ndarray | None, n_train_rows: int = 0
) -> list[str]:
    """Canonical stimulus name of every row of one pickle array.

    ``n_train_rows`` numbers the demo's test rows after its train rows.
    """
    if array.order_key is None:
        first = array.first_number if array.first_number is not None else n_train_rows + 1
        return [numbered_stimulus(first + i) for i in range(n_rows)]
    if order is None:
        raise KeyError(f"Key {array.order_key!r} is needed to name the rows of {array.key!r}.")
    if len(order) != n_rows:
        raise ValueError(f"{array.order_key!r} has {len(order)} names but {array.key!r} has {n_rows} rows.")
    return [canonical_stimulus(spec.name, str(n)) for n in order]
