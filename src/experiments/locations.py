"""Where the project and its configuration live: imported by the config frame and by the tracking package,
which needs the default store's definition (conf/paths/default.yaml) without the config checks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("project_root"):
    # conf/paths/default.yaml's ${project_root:}: the default store is resolved without the config frame too
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
