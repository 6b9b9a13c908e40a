"""Group41 and MMP ROI sets against DATA_FORMATS section 1."""
from __future__ import annotations

import numpy as np
import pytest

from utils import rois


def test_group41_matches_published_facts():
    idx = rois.get_roi_set("Group41")
    assert idx.dtype == np.int64 and idx.size == rois.GROUP41_SIZE == 13156
    assert idx[:10].tolist() == list(range(53, 63))
    assert idx[-5:].tolist() == [52464, 52465, 52482, 52483, 52500]
    assert rois.sha1_of_indices(idx) == rois.GROUP41_SHA1
    assert (idx < rois.N_CORTEX_LEFT).sum() == 6541 and (idx >= rois.N_CORTEX_LEFT).sum() == 6615
    assert idx.min() == 0 and idx.max() == 54405


def test_per_roi_sizes_and_order():
    sizes = {"V1": 1618, "MST": 149, "VVC": 250, "7m": 265, "TPOJ1": 478}
    for name, size in sizes.items():
        assert rois.get_roi_set(name).size == size
    sizes_in_order = [rois.get_roi_set(n).size for n in rois.GROUP41]
    assert sum(sizes_in_order) == 13156
    v1 = rois.get_roi_set("V1")
    assert np.array_equal(rois.get_roi_set("Group41")[: v1.size], v1)
    assert np.all(np.diff(v1) > 0)


def test_unknown_roi_name_is_named():
    with pytest.raises(ValueError, match="'NOPE'"):
        rois.roi_indices(["V1", "NOPE"])


def test_roi_set_is_read_only():
    idx = rois.get_roi_set("Group41")
    with pytest.raises(ValueError):
        idx[0] = 1


def test_check_roi_indices_reports_disagreement():
    good = rois.get_roi_set("Group41")
    rois.check_roi_indices(good)
    bad = good.copy()
    bad[[0, 1]] = bad[[1, 0]]
    with pytest.raises(ValueError, match="differing: 2"):
        rois.check_roi_indices(bad, source="x.pkl")
    with pytest.raises(ValueError, match="found 10 "):
        rois.check_roi_indices(good[:10])


def test_parse_roi_set_named_joined_and_single():
    assert rois.parse_roi_set("Group41") == tuple(rois.GROUP41)
    assert rois.parse_roi_set("V1+V2+MT") == ("V1", "V2", "MT")
    assert rois.parse_roi_set("V1") == ("V1",)
    assert rois.get_roi_set("V1+V2").size == 1618 + 1220
    assert rois.roi_set_size("Group41") == 13156
    with pytest.raises(ValueError, match=r"Unknown roi_set='V1\+NOPE': \['NOPE'\]"):
        rois.parse_roi_set("V1+NOPE")
    with pytest.raises(ValueError, match=r"\['V1'\] more than once"):
        rois.parse_roi_set("V1+V2+V1")


def test_select_vertices_follows_the_roi_set_order():
    group41 = rois.get_roi_set("Group41")
    assert rois.select_vertices(group41, "Group41", "Group41", "x.pkl") is None
    columns = rois.select_vertices(group41, "Group41", "V2+V1", "x.pkl")
    np.testing.assert_array_equal(group41[columns], rois.get_roi_set("V2+V1"))
    assert columns[0] == rois.roi_set_size("V1+MST+V6")  # V2 comes after V1, MST, V6 in Group41


def test_select_vertices_outside_the_file_names_set_file_and_rois():
    with pytest.raises(ValueError, match=r"roi_set='V1\+A1' is not a subset of x\.pkl.*Group41.*lacks ROI\(s\) \['A1'\]"):
        rois.select_vertices(rois.get_roi_set("Group41"), "Group41", "V1+A1", "x.pkl")
