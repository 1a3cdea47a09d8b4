"""Build the face-crop cache without training: python prepare.py data=<...> [shard=<i> shards=<n>]"""

import hydra
from omegaconf import DictConfig

from src.experiments import cli
from src.experiments.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="prepare")
def main(cfg: DictConfig) -> None:
    from src.experiments.prepare import prepare

    prepare(cfg)


if __name__ == "__main__":
    cli.run(main, task="prepare")
