"""Evaluate a detector on the test list: python evaluate.py -m augment=none,flip,heavy"""

import hydra
from omegaconf import DictConfig

from src.experiments import cli
from src.experiments.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from src.experiments.evaluate import evaluate

    return evaluate(cfg).get("test/video_auc")


if __name__ == "__main__":
    cli.run(main, task="evaluate")
