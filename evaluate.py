"""Evaluate a detector on the test list: python evaluate.py -m augment=none,flip,heavy"""

import hydra
from omegaconf import DictConfig

from src.experiments import cli
from src.experiments.config import CONFIG_DIR
from src.experiments.extras import apply_extras


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from src.experiments.evaluate import evaluate

    with cli.clean_user_errors():
        apply_extras(cfg)
        return evaluate(cfg).get("test/video_auc")


if __name__ == "__main__":
    cli.run(main, task="evaluate")
