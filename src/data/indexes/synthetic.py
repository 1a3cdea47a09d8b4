"""The embedded synthetic set's indexer: generates the set on first use, then indexes it as Celeb-DF.

conf/data/synthetic.yaml builds it with the generator's parameters (``data.synthetic``: ``preset``, ``seed``,
``artifact_strength`` and any ``+data.synthetic.<knob>``; see ``src.data.synthetic``). The data module knows
nothing of generation: like every indexer, this one is called when the dataset is first indexed.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

from src.data.indexes.base import VideoIndex, register_dataset
from src.data.indexes.celebdf import index_celebdf


@register_dataset("synthetic", "synthetic Celeb-DF", real=False)
def index_synthetic(root: str | Path, synthetic: Mapping | None = None) -> VideoIndex:
    """Generate the synthetic Celeb-DF into ``root`` unless it is there (announcing what and where first),
    then index it with the Celeb-DF indexer (the same index, and fingerprint, as before generation moved here).

    Jobs that find the set missing take turns (a file lock beside ``root``): the first renders it, the others
    wait and find it complete. Racing generators would be safe too, each publishing by one rename, but each
    would render the whole set.

    Args:
        root: the set's folder (``data.root``); created by the generator.
        synthetic: the generator's parameters (``data.synthetic``); None: the defaults.
    """
    # the generator (numpy rendering, video encoding) loads only when a set is indexed
    from src.data.synthetic import MARKER, announce_synthetic, generate_synthetic_celebdf

    root, params = Path(root).expanduser(), dict(synthetic or {})
    lock = nullcontext()
    if not (root / MARKER).is_file():
        from filelock import FileLock

        root.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root.parent / f".{root.name}.lock")
    with lock:
        announce_synthetic(root, params)
        generate_synthetic_celebdf(root, **params)  # a set already there: reused if its parameters match
    return index_celebdf(root)


index_synthetic.creates_root = True  # data.root need not exist yet: the data module does not require it
