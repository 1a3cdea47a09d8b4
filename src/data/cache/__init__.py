"""The face-crop cache: each video decoded and its faces detected once, then read back as one array.

`crops`: the settings (`CropSettings`, the `data.*` keys of the face crops), the keys, the entries and
the cache (`FaceCropCache`); `reports`: what a build reports; `pool`: the build processes that decode
the videos; `errors`: the cache's own errors.
"""

from src.data.cache.crops import CACHE_FORMAT, CacheEntry, CropSettings, FaceCropCache, extract_face_crops
from src.data.cache.errors import CacheEntryError, CacheError, CacheWriteError
from src.data.cache.reports import BuildReport, VideoReport

__all__ = [
    "CACHE_FORMAT",
    "BuildReport",
    "CacheEntry",
    "CacheEntryError",
    "CacheError",
    "CacheWriteError",
    "CropSettings",
    "FaceCropCache",
    "VideoReport",
    "extract_face_crops",
]
