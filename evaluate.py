"""Evaluate a detector on the test list: python evaluate.py -m augment=none,flip,heavy; or video=<file>."""

import hydra
from omegaconf import DictConfig

from src.experiments.config import CONFIG_DIR, check_config, clean_user_errors, exit_on_signals, run_cleanly


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    with clean_user_errors():
        check_config(cfg)
        from src.experiments.evaluate import evaluate

        result = evaluate(cfg)
    return result.get("test/video_auc") if isinstance(result, dict) else None


if __name__ == "__main__":
    exit_on_signals()  # between a sweep's jobs too: SIGTERM/SIGINT end the process with 128 + signal
    run_cleanly(main)  # a config that does not compose: one line naming the key
