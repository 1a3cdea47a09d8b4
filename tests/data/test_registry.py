"""The dataset registry (`src.data.indexes`) is the one list of datasets: the data configs, the synthetic
layouts, the cross-dataset study and the YAMLs that list datasets agree with it."""

from __future__ import annotations

from omegaconf import OmegaConf

from src.data.indexes import DATASET_TITLES, EMBEDDED, REAL_DATASETS
from src.experiments.config import CONFIG_DIR


def test_every_registered_dataset_has_a_data_config_and_back():
    assert {p.stem for p in (CONFIG_DIR / "data").glob("*.yaml")} == set(DATASET_TITLES)
    assert EMBEDDED in DATASET_TITLES and EMBEDDED not in REAL_DATASETS


def test_the_synthetic_layouts_cover_every_real_dataset():
    from src.data.synthetic.layouts import LAYOUTS

    assert ["celebdf", *LAYOUTS] == sorted(REAL_DATASETS, key=lambda n: n != "celebdf")
    assert set(LAYOUTS) | {"celebdf"} == set(REAL_DATASETS)


def test_the_cross_dataset_study_reads_the_registry():
    from src.experiments.studies import cross_dataset

    assert tuple(cross_dataset.TEST_SETS) == REAL_DATASETS


def test_the_cross_dataset_yamls_list_the_registered_datasets_in_order():
    experiment = OmegaConf.load(CONFIG_DIR / "experiment" / "cross_dataset.yaml")
    assert tuple(experiment.paths.datasets) == REAL_DATASETS
    assert tuple(experiment.hydra.sweeper.params.data.split(",")) == REAL_DATASETS
    report = OmegaConf.load(CONFIG_DIR / "report" / "cross_dataset.yaml")
    assert tuple(report.datasets) == REAL_DATASETS
