"""The dataset registry (`src.data.indexes`): the indexers declare the datasets, and everything else that
names datasets (the data configs, the synthetic layouts, the cross-dataset protocol) names registered ones."""

from __future__ import annotations

import inspect

from omegaconf import OmegaConf

from src.data.indexes import DATASET_TITLES, DATASETS, EMBEDDED, REAL_DATASETS
from src.experiments.config import CONFIG_DIR


def test_every_registered_dataset_has_a_data_config_and_back():
    assert {p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")} == set(DATASET_TITLES)
    assert EMBEDDED in DATASET_TITLES and EMBEDDED not in REAL_DATASETS


def test_each_data_config_builds_its_registered_indexer():
    for name, dataset in DATASETS.items():
        data = OmegaConf.load(CONFIG_DIR / "data" / f"{name}.yaml")
        target = data.index._target_ if "index" in data else "src.data.indexes.celebdf.index_celebdf"
        assert target == f"{dataset.indexer.__module__}.{dataset.indexer.__name__}", name
        assert data.get("name", "celebdf") == name


def test_a_dataset_is_registered_once_and_the_registry_refuses_a_second_indexer_of_that_name():
    import pytest

    from src.data.indexes import register_dataset

    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("ffpp", "again")(lambda root: None)
    assert inspect.signature(DATASETS["ffpp"].indexer).parameters["root"]


def test_the_synthetic_layouts_are_of_registered_datasets():
    from src.data.synthetic.layouts import LAYOUTS

    assert set(LAYOUTS) <= set(REAL_DATASETS)


def test_the_cross_dataset_protocol_names_registered_datasets_with_a_stand_in_layout_in_one_order():
    from src.data.synthetic.layouts import LAYOUTS
    from src.experiments.studies import cross_dataset

    experiment = OmegaConf.load(CONFIG_DIR / "experiment" / "cross_dataset.yaml")
    protocol = tuple(experiment.paths.datasets)
    assert set(protocol) <= set(REAL_DATASETS) and set(protocol) - {"celebdf"} <= set(LAYOUTS)
    assert tuple(cross_dataset.TEST_SETS) == protocol
    assert tuple(experiment.hydra.sweeper.params.data.split(",")) == protocol
    report = OmegaConf.load(CONFIG_DIR / "report" / "cross_dataset.yaml")
    assert tuple(report.datasets) == protocol
