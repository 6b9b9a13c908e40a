"""One spec per dataset: subjects, file suffix, pickle keys, naming, splits, repeats and sources.

Everything the rest of the code knows about BMD, HAD, CC2017 and the synthetic demo lives
here (see DATA_FORMATS.md sections 2-3), as fields of each ``DatasetSpec`` or as small
functions a spec refers to; code elsewhere reads the spec and never branches on a dataset's
name. Paths are built by ``utils.layout``.

Canonical stimulus names used across the project (targets, predictions, trials tables):
- BMD / demo: ``"0001"``..; HAD: ``"<Class>/<clip name>"`` (class folder, spaces kept);
- CC2017: zero-padded ``"seg1_begin-002_end-004"`` (the pickles store it unpadded).

Adding a dataset: write its ``DatasetSpec`` below (its arrays, naming functions, split rule
and where it is published) and add it to ``DATASETS``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils import layout
from utils.io import json_kind, read_json
from utils.rois import DEFAULT_ROI_SET, GROUP41_SIZE

N_GROUP41 = GROUP41_SIZE
SPLITS = ("train", "test")

_SUBJECT_RE = re.compile(r"^(?:sub-?)?0*(\d+)$")
_NUMBERED_RE = re.compile(r"[0-9]{4}")
_CC2017_RE = re.compile(r"^(?P<seg>(?:seg|test)\d+)_begin-(?P<b>\d+)_end-(?P<e>\d+)$")
_HAD_RE = re.compile(r"^v_(?P<cls>.+?)_id_")
# A whole HAD clip name: ``v_<Class>_id_<YouTube id>_start_<s>_label_<k>`` (the class may hold spaces).
_HAD_CLIP_RE = re.compile(r"^v_(?P<cls>[A-Za-z0-9][A-Za-z0-9 _-]*?)_id_[A-Za-z0-9_-]+_start_\d+(?:\.\d+)?_label_\d+$")
_BMD_VIDEO_RE = re.compile(r"(?:^|/)mp4_h264/(\d{4})\.mp4$")

CC2017_TRAIN_SEGMENTS = tuple(f"seg{i}" for i in range(1, 19))
CC2017_TEST_SEGMENTS = tuple(f"test{i}" for i in range(1, 6))
CC2017_SHORT_RUN = {"subject": 3, "test_rows": 11985}


# --------------------------------------------------------------------------------------------- specs


def same_name(name: str) -> str:
    """A stimulus name as it is (datasets whose names match across sources unchanged)."""
    return name


@dataclass(frozen=True)
class ArraySpec:
    """One fMRI array in a subject pickle.

    key: pickle key; split: ``train``/``test`` or ``None`` when the dataset's row split rule
    decides per stimulus (HAD); ndim: 3 for (stimulus, repeat, vertex), 2 for (trial, vertex);
    order_key: key of the per-row stimulus names, or ``None`` when rows are numbered;
    first_number: for numbered rows, the number of row 0 (BMD train 1, test 1001);
    ``None`` continues after the train rows (the demo, whose sizes are flags);
    rows: the rows it must have (``None`` when its size is a flag, as for the demo).
    """

    key: str
    split: str | None
    ndim: int
    order_key: str | None = None
    first_number: int | None = 1
    rows: int | None = None


@dataclass(frozen=True)
class StimuliRelease:
    """Where a dataset's videos are published, for ``utils.download``.

    kind: ``openneuro`` (objects under the S3 prefix ``location``) or ``drive`` (the Drive
    folder ``utils.download.DRIVE_FOLDERS[location]``); video_file: path under ``location``
    -> destination under ``stimuli_<ds>/`` (None: not one of the dataset's files);
    page: where a person gets them by hand; by_hand_into: where they go under
    ``stimuli_<ds>/``; terms: the terms of use to accept first (empty: none);
    note: what must be fetched by hand in any case (empty: nothing).
    """

    kind: str
    location: str
    video_file: Callable[[str], str | None]
    page: str
    by_hand_into: str
    terms: str = ""
    note: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset; see the module docstring for stimulus naming.

    canonical: a name as a source stores it -> the canonical stimulus name (ValueError when
    it breaks the dataset's naming); match: a name -> the key names are matched by across
    sources; split_rule: ``(spec, data_root, subject)`` -> ``{split: stimuli}`` (subject None:
    every subject); splits_per_subject: the split differs per subject (HAD);
    row_split: pickle row names -> their splits, for arrays whose ``split`` is None;
    stimulus_folders: canonical names carry one folder (HAD ``<Class>/<clip>``);
    indiv_namings: file namings of the individual-file layout (``rep``: ``<stim>_rep<k>.npy``,
    ``number``: ``NNNN_<k>.npy``); has_annotations: BMD-format ``annotations.json``
    (captions, labels, split); synthetic: made offline by ``utils.synthetic`` with sizes set
    by flags (not downloaded; any subject number); pickle_roi_set: the ROI set the subject
    pickles hold; row_overrides: ``(subject, array key)`` -> rows, where a subject differs.
    """

    name: str
    subjects: tuple[int, ...]
    suffix: str
    arrays: tuple[ArraySpec, ...]
    repeats: dict[str, int]
    stimuli_subdir: str
    canonical: Callable[[str], str]
    split_rule: Callable[[DatasetSpec, str | Path | None, int | None], dict[str, list[str]]]
    match: Callable[[str], str] = same_name
    splits_per_subject: bool = False
    row_split: Callable[[list[str]], list[str]] | None = None
    stimulus_folders: bool = False
    indiv_namings: tuple[str, ...] = ("rep",)
    has_annotations: bool = False
    synthetic: bool = False
    pickle_roi_set: str = DEFAULT_ROI_SET
    row_overrides: dict[tuple[int, str], int] = field(default_factory=dict)
    annotations_key: str = ""
    stimuli_release: StimuliRelease | None = None
    checkpoint_folders: tuple[str, ...] = ()
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


# --------------------------------------------------------------------------------------------- naming


def numbered_stimulus(number: int) -> str:
    """BMD/demo stimulus name ``NNNN``."""
    return f"{number:04d}"


def numbered_name(name: str) -> str:
    """A BMD/demo name ``NNNN`` as it is; anything else raises ValueError."""
    if not _NUMBERED_RE.fullmatch(name):
        raise ValueError(f"Not a numbered stimulus name: {name!r} (expected four digits like '0001').")
    return name


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
    """Canonical HAD stimulus ``<Class>/<clip>`` from either form; ValueError unless the clip part is a whole
    HAD clip name and the folder is its class (spelled with spaces or underscores)."""
    folder, _, clip = name.rpartition("/")
    match = _HAD_CLIP_RE.match(clip)
    if not match or "/" in folder or (folder and folder.replace(" ", "_") != match["cls"].replace(" ", "_")):
        raise ValueError(
            f"Not a HAD clip name: {name!r} (expected '<Class>/v_<Class>_id_<youtube id>_start_<s>_label_<k>', "
            "like 'Drum corps/v_Drum corps_id_0Qo8FzNJ460_start_28.0_label_1', or the clip part alone)."
        )
    return name if folder else f"{match['cls']}/{clip}"


def had_match_key(name: str) -> str:
    """HAD names match with class spaces as underscores (public copies differ in that only)."""
    # Spaces occur only in the class part (YouTube ids have none), so this is class-only.
    return had_stimulus(name).replace(" ", "_")


def match_key(dataset: str, stimulus: str) -> str:
    """Key for matching names across sources (HAD class spaces -> underscores; CC2017 padded)."""
    return get_spec(dataset).match(stimulus)


def canonical_from(spec: DatasetSpec, name: str, source: str) -> str:
    """The canonical name of a stimulus spelled ``name`` in ``source`` (a file or flag), a safe relative path
    (``layout.check_stimulus``); a name that breaks the dataset's naming raises naming ``source``."""
    try:
        canonical = spec.canonical(name)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    return layout.check_stimulus(canonical, source)


def check_stimulus(spec: DatasetSpec, name: str, source: str) -> str:
    """``name`` when it is already a canonical stimulus name of the dataset (see ``canonical_from``); else ValueError
    naming ``source``."""
    layout.check_stimulus(name, source)
    canonical = canonical_from(spec, name, source)
    if canonical != name:
        raise ValueError(f"{source}: stimulus {name!r} is not spelled as {spec.name} names it ({canonical!r}).")
    return name


def check_stimuli(spec: DatasetSpec, names: list[str], source: str) -> list[str]:
    """``names``, each checked by ``check_stimulus`` (the first bad one raises)."""
    for name in names:
        check_stimulus(spec, name, source)
    return names


def canonical_stimulus(dataset: str, name: str) -> str:
    """Canonical project name of a stimulus as stored in a pickle's order list."""
    return get_spec(dataset).canonical(str(name))


# --------------------------------------------------------------------------------------------- splits


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


def numbered_splits(spec: DatasetSpec, data_root: str | Path | None, subject: int | None) -> dict[str, list[str]]:
    """Numbered rows: each split's array numbers ``n_train`` / ``n_test`` stimuli from its first number."""
    counts = {"train": spec.n_train, "test": spec.n_test}
    return {a.split: [numbered_stimulus(a.first_number + i) for i in range(counts[a.split])] for a in spec.arrays}


def segment_splits(spec: DatasetSpec, data_root: str | Path | None, subject: int | None) -> dict[str, list[str]]:
    """CC2017: every clip of the training segments, then of the test segments."""
    return {split: cc2017_clip_names(split) for split in SPLITS}


def annotated_splits(spec: DatasetSpec, data_root: str | Path | None, subject: int | None) -> dict[str, list[str]]:
    """The ``set`` field of the BMD-format annotations (the demo, whose sizes are flags)."""
    notes = load_annotations(data_root, spec.name)
    return {split: sorted(k for k, v in notes.items() if v["set"] == split) for split in SPLITS}


def listed_splits(spec: DatasetSpec, data_root: str | Path | None, subject: int | None) -> dict[str, list[str]]:
    """Per-subject split lists ``metadata_<ds>/<ds>_<split>_set_per_subject.json`` (HAD).

    subject None: the union over subjects. Names keep the lists' spelling, sorted.
    """
    out = {}
    for split in SPLITS:
        path = layout.split_list_path(data_root, spec.name, split)
        if not path.exists():
            raise FileNotFoundError(
                f"Missing {path}: {spec.name} splits are per subject and are read from the lists "
                f"{[layout.split_list_path(data_root, spec.name, s).name for s in SPLITS]} in {path.parent} "
                f"(the original project's metadata); put them there, or prepare each subject from its pickle "
                f"(`{download_command(spec, data_root=data_root)} --subjects N --prepare`), whose trials table carries its split."
            )
        again = "replace it with the original project's split list"
        per_subject = read_json(path, remake=again)
        if not isinstance(per_subject, dict) or not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in per_subject.values()):
            raise ValueError(f"{path}: expected an object {{subject: [stimulus names]}}, found {json_kind(per_subject)}: {again}.")
        if subject is None:
            names = [n for listed in per_subject.values() for n in listed]
        else:
            names = per_subject.get(subject_folder(subject), per_subject.get(f"sub-{subject:02d}", []))
        out[split] = sorted({canonical_from(spec, n, str(path)) for n in names})
    return out


def split_lists(spec: DatasetSpec, data_root: str | Path | None = None, subject: int | None = None) -> dict[str, list[str]]:
    """``{split: canonical stimuli}`` by the dataset's split rule (``subject`` for per-subject splits)."""
    return spec.split_rule(spec, data_root, subject)


def list_stimuli(spec: DatasetSpec, split: str, data_root: str | Path | None = None) -> list[str]:
    """Canonical stimulus names of ``split`` (``train``, ``test`` or ``all``), ordered by rule.

    BMD and CC2017 follow fixed rules; the demo reads its annotations; HAD reads the split
    lists in ``metadata_had/`` (union over subjects).
    """
    if split == "all":
        return list_stimuli(spec, "train", data_root) + list_stimuli(spec, "test", data_root)
    if split not in SPLITS:
        raise ValueError(f"Unknown split={split!r}; use 'train', 'test' or 'all'.")
    return split_lists(spec, data_root)[split]


def stimulus_splits(
    spec: DatasetSpec, stimuli: list[str], data_root: str | Path | None = None, subject: int | None = None
) -> dict[str, str]:
    """Split of each of ``stimuli`` by the dataset's split rule; ``""`` for a stimulus the rule does not list.

    Per-subject splits (HAD) need ``subject`` (and ``data_root``); names match by ``spec.match``.
    """
    if spec.splits_per_subject and subject is None:
        raise ValueError(f"{spec.name} splits are per subject: pass data_root and subject (or splits=).")
    by_key = {spec.match(s): split for split, names in split_lists(spec, data_root, subject).items() for s in names}
    return {s: by_key.get(spec.match(s), "") for s in stimuli}


# --------------------------------------------------------------------------------------------- where videos are published


def bmd_video_file(path: str) -> str | None:
    """An OpenNeuro ds005165 key ``.../mp4_h264/NNNN.mp4`` -> ``mp4/NNNN.mp4``."""
    match = _BMD_VIDEO_RE.search(path)
    return f"mp4/{match.group(1)}.mp4" if match else None


def had_video_file(path: str) -> str | None:
    """A HAD ``.mp4`` path -> ``<Class>/<clip>.mp4`` with the class spelled as in the clip name."""
    if not path.endswith(".mp4"):
        return None
    try:
        return had_stimulus(path.rsplit("/", 1)[-1][: -len(".mp4")]) + ".mp4"
    except ValueError:
        return path


def cc2017_video_file(path: str) -> str:
    """A Drive clip path -> ``<padded name>.mp4`` (files that are not clips keep their path)."""
    stem = path.rsplit("/", 1)[-1]
    if not stem.endswith(".mp4"):
        return path
    try:
        return pad_cc2017(stem[: -len(".mp4")]) + ".mp4"
    except ValueError:
        return path


# --------------------------------------------------------------------------------------------- the datasets


BMD = DatasetSpec(
    name="bmd",
    subjects=tuple(range(1, 11)),
    suffix="_betas-GLMsingle_type-typed_z=1",
    arrays=(
        ArraySpec("train_data_allvoxel", "train", 3, None, 1, rows=1000),
        ArraySpec("test_data_allvoxel", "test", 3, None, 1001, rows=102),
    ),
    repeats={"train": 3, "test": 10},
    stimuli_subdir="mp4",
    canonical=numbered_name,
    split_rule=numbered_splits,
    indiv_namings=("rep", "number"),
    has_annotations=True,
    annotations_key="ds005165/derivatives/stimuli_metadata/annotations.json",
    stimuli_release=StimuliRelease(
        kind="openneuro",
        location="ds005165/derivatives/stimuli_metadata/",
        video_file=bmd_video_file,
        page="https://openneuro.org/datasets/ds005165 (and the BMD website)",
        by_hand_into="mp4/",
        terms="the BOLD Moments terms of use (1102 mp4)",
    ),
    checkpoint_folders=("bmd_example_a", "bmd_example_b"),
    n_train=1000,
    n_test=102,
    description="BOLD Moments: 1102 three-second videos, 10 subjects",
)

HAD = DatasetSpec(
    name="had",
    subjects=tuple(range(1, 31)),
    suffix="_betas-GLMsingle_type-typeb_z=1",
    arrays=(ArraySpec("data_allvoxel", None, 3, "stim_order", rows=720),),
    repeats={"train": 1, "test": 1},
    stimuli_subdir="",
    canonical=had_stimulus,
    split_rule=listed_splits,
    match=had_match_key,
    splits_per_subject=True,
    row_split=had_split,
    stimulus_folders=True,
    stimuli_release=StimuliRelease(
        kind="openneuro",
        location="ds004488/stimuli/",
        video_file=had_video_file,
        page="https://openneuro.org/datasets/ds004488",
        by_hand_into="<Class>/<clip>.mp4",
    ),
    n_train=540,
    n_test=180,
    description="Human Actions Dataset: 720 two-second clips per subject, 180 classes, 30 subjects",
)

CC2017 = DatasetSpec(
    name="cc2017",
    subjects=(1, 2, 3),
    suffix="_estimates-TSTrialEstimates_z=1",
    arrays=(
        ArraySpec("train_data_allvoxel", "train", 2, "train_stim_order", rows=4302 * 2),
        ArraySpec("test_data_allvoxel", "test", 2, "test_stim_order", rows=1199 * 10),
    ),
    repeats={"train": 2, "test": 10},
    stimuli_subdir="",
    canonical=pad_cc2017,
    split_rule=segment_splits,
    match=pad_cc2017,
    row_overrides={(CC2017_SHORT_RUN["subject"], "test_data_allvoxel"): CC2017_SHORT_RUN["test_rows"]},
    stimuli_release=StimuliRelease(
        kind="drive",
        location="cc2017_clips",
        video_file=cc2017_video_file,
        page="the CC2017 clips Drive folder",
        by_hand_into="<clip>.mp4",
        note=(
            "CC2017 raw data (fMRI and the original 8-minute videos) are not mirrored: get them from Purdue PURR, "
            "publication 2809 (https://purr.purdue.edu/publications/2809), by hand."
        ),
    ),
    n_train=4302,
    n_test=1199,
    description="Wen et al. 2017: 2 s clips of 8 min segments, 3 subjects",
)

DEMO = DatasetSpec(
    name="demo",
    subjects=(1, 2),
    suffix=BMD.suffix,
    arrays=(ArraySpec("train_data_allvoxel", "train", 3, None, 1), ArraySpec("test_data_allvoxel", "test", 3, None, None)),
    repeats={"train": 3, "test": 10},
    stimuli_subdir="mp4",
    canonical=numbered_name,
    split_rule=annotated_splits,
    indiv_namings=("rep", "number"),
    has_annotations=True,
    synthetic=True,
    n_train=120,
    n_test=24,
    description="SYNTHETIC demo in BMD formats (procedural videos, known encoding model)",
)

DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (BMD, HAD, CC2017, DEMO)}


# --------------------------------------------------------------------------------------------- lookups and subjects


def get_spec(name: str) -> DatasetSpec:
    """Look up a dataset spec by name, with an error listing the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"Unknown dataset={name!r}. Known datasets: {sorted(DATASETS)}.") from None


def has_annotations(dataset: str) -> bool:
    """True for a dataset with BMD-format annotations (human captions, labels, split)."""
    return get_spec(dataset).has_annotations


def download_command(spec: DatasetSpec, subject: int | None = None, data_root: str | Path | None = None) -> str:
    """The command that makes a dataset's inputs (one subject's, where a dataset is fetched per subject)."""
    command = f"python download_data.py --dataset {spec.name}{layout.root_flag(data_root)}"
    return command if subject is None or spec.synthetic else f"{command} --subjects {subject}"


def expected_rows(spec: DatasetSpec, array: ArraySpec, subject: int) -> int | None:
    """Rows an array must have for ``subject`` (None when the dataset's size is a flag, as for the demo)."""
    return spec.row_overrides.get((subject, array.key), array.rows)


def parse_subject(text: str | int) -> int:
    """``1``, ``"01"``, ``"sub01"``, ``"sub-01"`` -> 1."""
    match = _SUBJECT_RE.match(str(text).strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"Cannot read subject {text!r}: use a number (1), 'sub01' or 'sub-01'.")
    return int(match.group(1))


def check_subjects(spec: DatasetSpec, subjects: list[str | int] | None) -> list[int]:
    """Parse subject labels and check them against the spec (all subjects when None; any for a synthetic set)."""
    if not subjects:
        return list(spec.subjects)
    parsed = [parse_subject(s) for s in subjects]
    unknown = [s for s in parsed if s not in spec.subjects]
    if unknown and not spec.synthetic:
        raise ValueError(
            f"Unknown subject(s) {unknown} for dataset {spec.name!r}: it has subjects "
            f"{spec.subjects[0]}..{spec.subjects[-1]}."
        )
    return parsed


def subject_folder(subject: int) -> str:
    """Canonical folder name ``subNN``."""
    return f"sub{subject:02d}"


def holds_data(folder: Path) -> bool:
    """True when ``folder`` holds a file at any depth (hidden files, such as locks and temporary files, do not count)."""
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in folder.rglob("*"))


def find_subject_folder(data_root: str | Path | None, dataset: str, subject: int) -> str:
    """The subject's folder on disk: the one of ``subNN`` / ``sub-NN`` that holds data, else the first that exists.

    An empty ``subNN/`` does not hide a ``sub-NN/`` holding the pickle; both holding data is an error naming both.
    """
    names = (subject_folder(subject), f"sub-{subject:02d}")
    folders = [layout.betas_dir(data_root, dataset, name) for name in names]
    with_data = [name for name, folder in zip(names, folders, strict=True) if holds_data(folder)]
    if len(with_data) > 1:
        raise ValueError(
            f"Subject {subject} of {dataset} has two folders holding data, {folders[0]} and {folders[1]}: "
            "keep one (move the files of the other into it, then delete it)."
        )
    if with_data:
        return with_data[0]
    existing = [name for name, folder in zip(names, folders, strict=True) if folder.is_dir()]
    return existing[0] if existing else names[0]


# --------------------------------------------------------------------------------------------- files


def annotations_path(data_root: str | Path | None, dataset: str) -> Path:
    """``metadata_<ds>/annotations.json`` (BMD and demo); see ``layout.annotations_path``."""
    return layout.annotations_path(data_root, dataset)


def load_annotations(data_root: str | Path | None, dataset: str) -> dict[str, dict]:
    """BMD-format annotations ``{stimulus: {field: value}}``; a missing, corrupt or ill-typed file, or a key
    that is not one of the dataset's stimulus names, raises naming the file and the command that fetches it."""
    spec = get_spec(dataset)
    path = layout.annotations_path(data_root, dataset)
    again = f"delete it and run `{download_command(spec, data_root=data_root)}` again"
    if not path.exists():
        raise FileNotFoundError(f"Missing annotations {path}: run `{download_command(spec, data_root=data_root)}` first.")
    notes = read_json(path, remake=again)
    if not isinstance(notes, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by stimulus, found {json_kind(notes)}; {again}.")
    bad = next((k for k, v in notes.items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: expected an object of fields for every stimulus, found {json_kind(notes[bad])} under {bad!r}; {again}.")
    bad = next((k for k, v in notes.items() if v.get("set") not in SPLITS), None)
    if bad is not None:
        raise ValueError(f"{path}: expected a 'set' of {list(SPLITS)} for every stimulus, found {notes[bad].get('set')!r} under {bad!r}; {again}.")
    check_stimuli(spec, list(notes), f"{path} (keys)")
    return notes


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
        raise ValueError(f"Key {array.order_key!r} is needed to name the rows of {array.key!r}.")
    if len(order) != n_rows:
        raise ValueError(f"{array.order_key!r} has {len(order)} names but {array.key!r} has {n_rows} rows.")
    return [spec.canonical(str(n)) for n in order]
