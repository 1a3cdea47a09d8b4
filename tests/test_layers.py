"""Layers load only what they use: reading the MLflow store (tracking) and writing the report start no video
decoding, no face detector and nothing of the data package. Each module is imported in a fresh interpreter,
since this test process has long imported everything."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the data stack: decoding, face detection, augmentation, and the project's own data package
FORBIDDEN = ("cv2", "facenet_pytorch", "albumentations", "decord")
FORBIDDEN_PACKAGE = "src.data"


def _loaded_by(module: str) -> list[str]:
    """The modules in sys.modules after `import <module>` in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module", ["src.experiments.report", "src.experiments.report.__main__", "src.experiments.tracking"]
)
def test_report_and_tracking_load_no_data_stack(module):
    loaded = _loaded_by(module)
    heavy = [name for name in loaded if name.split(".")[0] in FORBIDDEN]
    data = [name for name in loaded if name == FORBIDDEN_PACKAGE or name.startswith(FORBIDDEN_PACKAGE + ".")]
    assert not heavy, f"import {module} loads {heavy[:5]}"
    assert not data, f"import {module} loads {data[:5]}"


@pytest.mark.parametrize("environment", [{}, {"MLFLOW_TRACKING_URI": "sqlite:////tmp/elsewhere/mlflow.db"}])
def test_the_store_is_found_without_the_config_frame(environment):
    """`make ui`'s command in a fresh interpreter: the default store, or MLFLOW_TRACKING_URI when set."""
    import os

    code = "from src.experiments.tracking import default_tracking_uri as u; print(u())"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | environment
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    expected = environment.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT}/mlflow.db")
    assert done.stdout.strip() == expected


def test_the_report_command_runs_in_a_fresh_interpreter(tmp_path):
    """`make report` on an empty store: the one-paragraph hint and exit status 1, no traceback."""
    import os

    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    done = subprocess.run(
        [sys.executable, "-m", "src.experiments.report", "--preset", "study", "--no-log"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "No finished evaluate runs found" in done.stderr
