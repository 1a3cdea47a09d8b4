"""Where the project and its configuration live: imported by the config frame and by the tracking package,
which needs the default store's definition (conf/paths/default.yaml) without the config checks."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
