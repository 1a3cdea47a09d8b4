"""Dataset indexers, one file per source (``base`` holds what they share), and the registry below.

``DATASET_TITLES`` is the one list of datasets: each ``data=<name>`` config's name (also its indexer's
``VideoIndex.dataset``) and the title messages and reports print. The cross-dataset study, the synthetic
layouts and the tests read it; conf/experiment/cross_dataset.yaml and conf/report/cross_dataset.yaml list
``REAL_DATASETS`` in YAML (a test keeps them equal).
"""

# in the cross-dataset protocol's order: the training set (FF++) first, then the test sets
DATASET_TITLES = {
    "ffpp": "FaceForensics++",
    "celebdf": "Celeb-DF",
    "dfdc": "DFDC",
    "dfdcp": "DFDC-preview",
    "dfd": "DeepFakeDetection",
    "uadfv": "UADFV",
    "synthetic": "synthetic Celeb-DF",
}
EMBEDDED = "synthetic"  # generated on first use in Celeb-DF's layout: no real data of its own
REAL_DATASETS = tuple(name for name in DATASET_TITLES if name != EMBEDDED)
