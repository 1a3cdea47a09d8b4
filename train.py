"""Train a deepfake detector: python train.py [model=mesonet] [trainer.max_epochs=20] ..."""

import hydra
from omegaconf import DictConfig

from src.experiments import cli
from src.experiments.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from src.experiments.train import train

    return train(cfg).get(cfg.optimized_metric)  # the objective of a sweeper (hparams_search)


if __name__ == "__main__":
    cli.run(main, task="train")
