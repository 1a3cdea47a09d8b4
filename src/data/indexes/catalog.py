"""The one list of datasets: each `data=<name>` config's name (also its indexer's ``VideoIndex.dataset``)
and the title messages and reports print."""

DATASET_TITLES = {
    "celebdf": "Celeb-DF",
    "ffpp": "FaceForensics++",
    "dfdc": "DFDC",
    "dfdcp": "DFDC-preview",
    "dfd": "DeepFakeDetection",
    "uadfv": "UADFV",
    "synthetic": "synthetic Celeb-DF",
}
