"""The synthetic set is one more indexer (src/data/indexes/synthetic.py): it generates the set on first use,
takes the generator's parameters from the keys users type (`data.synthetic.*`), and the data module has no
branch of its own for it."""

from __future__ import annotations

import logging

import hydra
import pytest

from src.data.indexes.synthetic import index_synthetic
from src.data.synthetic import MARKER
from tests.conftest import compose_config

TINY = {"num_identities": 3, "real_per_identity": 2, "fakes_per_real": 1, "youtube_real": 1, "num_frames": 8}


def _config(root, *extra):
    return compose_config(
        "train", [f"data.root={root}", *(f"+data.synthetic.{k}={v}" for k, v in TINY.items()), *extra]
    )


def test_the_users_keys_reach_the_indexer():
    cfg = compose_config("train", ["data.synthetic.preset=v1", "+data.synthetic.num_frames=9"])
    assert cfg.data.index._target_ == "src.data.indexes.synthetic.index_synthetic"
    assert cfg.data.index.synthetic.preset == "v1" and cfg.data.index.synthetic.num_frames == 9
    assert cfg.data.root.endswith("synthetic-celebdf-v1")


def test_the_data_module_leaves_generation_to_the_indexer(tmp_path, caplog):
    root = tmp_path / "synthetic"
    datamodule = hydra.utils.instantiate(
        _config(root).data
    )  # a missing root is no error: the indexer makes it
    assert not root.exists() and "synthetic" not in datamodule.hparams
    assert not hasattr(datamodule, "synthetic")
    with caplog.at_level(logging.WARNING):
        index = datamodule.dataset_index()
    assert "generating the embedded synthetic Celeb-DF" in caplog.text  # announced before generating
    assert (root / MARKER).is_file() and index.root == root
    assert len(index.records) == 3 * 2 * 2 + 1 and index.dataset == "celebdf"
    stamp = (root / MARKER).stat().st_mtime_ns
    again = index_synthetic(root, {**TINY, "preset": "v2", "seed": 0, "artifact_strength": 1.0})
    assert (root / MARKER).stat().st_mtime_ns == stamp  # reused, not regenerated
    assert again.fingerprint() == index.fingerprint()
    with pytest.raises(ValueError):  # other parameters for the same folder are refused
        index_synthetic(root, {**TINY, "seed": 1})


def test_a_missing_root_of_another_dataset_is_still_refused(tmp_path):
    cfg = compose_config("train", ["data=celebdf", f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(Exception, match="Celeb-DF root not found"):
        hydra.utils.instantiate(cfg.data)


def test_only_the_synthetic_set_has_generator_keys(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="synthetic"):
        compose_config("train", ["data=celebdf", f"data.root={tmp_path}", "data.synthetic.preset=v1"])
    added = compose_config("train", ["data=celebdf", f"data.root={tmp_path}", "+data.synthetic.num_frames=9"])
    with pytest.raises(Exception, match="data.synthetic: no such key"):
        hydra.utils.instantiate(added.data)
