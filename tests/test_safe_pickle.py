"""Restricted unpickling: real data pickles load, anything executable is refused."""
from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from utils.safe_pickle import UnsafePickleError, load_mbm_checkpoint, load_pickle


def test_loads_dict_of_arrays_lists_strings(tmp_path):
    data = {
        "train_data_allvoxel": np.random.default_rng(0).standard_normal((4, 3, 5)),
        "stim_order": ["v_A b_id_1", "v_C_id_2"],
        "roi_indices_hcp": np.arange(5, dtype=np.int64),
        "meta": {"n": 3, "t": (1, 2.5), "f": np.float32(1.5)},
    }
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = load_pickle(path)
        assert np.array_equal(loaded["train_data_allvoxel"], data["train_data_allvoxel"])
        assert loaded["stim_order"] == data["stim_order"] and loaded["meta"]["t"] == (1, 2.5)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_raises_without_side_effect(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    with pytest.raises(UnsafePickleError, match="system"):
        load_pickle(path)
    assert not marker.exists()
    eval_path = tmp_path / "eval.pkl"
    eval_path.write_bytes(b"cbuiltins\neval\n(Vprint('hi')\ntR.")
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_pickle(eval_path)


def test_truncated_and_missing(tmp_path):
    path = tmp_path / "t.pkl"
    blob = pickle.dumps({"a": np.zeros(1000)})
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_pickle(path)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        load_pickle(tmp_path / "missing.pkl")


def _save_published_style_checkpoint(path, module_name="config"):
    module = types.ModuleType(module_name)

    class Config_MBM_fMRI:  # noqa: N801 - the published class name
        pass

    Config_MBM_fMRI.__module__ = module_name
    Config_MBM_fMRI.__qualname__ = "Config_MBM_fMRI"
    module.Config_MBM_fMRI = Config_MBM_fMRI
    sys.modules[module_name] = module
    try:
        config = Config_MBM_fMRI()
        config.patch_size = 16
        config.embed_dim = 32
        config.subjects = ["sub-01"]
        state = {"cls_token": torch.randn(1, 1, 32), "patch_embed.proj.weight": torch.randn(32, 1, 16)}
        torch.save({"config": config, "model": state}, path)
    finally:
        del sys.modules[module_name]
    return state


def test_mbm_checkpoint_config_becomes_namespace(tmp_path):
    path = tmp_path / "sub-01.pth"
    state = _save_published_style_checkpoint(path)
    config, loaded = load_mbm_checkpoint(path)
    assert config.patch_size == 16 and config.embed_dim == 32 and config.subjects == ["sub-01"]
    assert set(loaded) == set(state)
    assert torch.equal(loaded["cls_token"], state["cls_token"])


def test_mbm_checkpoint_with_malicious_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"config": _Evil(marker), "model": {}}, path)
    with pytest.raises(UnsafePickleError, match="system"):
        load_mbm_checkpoint(path)
    assert not marker.exists()
