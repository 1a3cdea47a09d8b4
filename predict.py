"""Score video files: python predict.py video=<file> | videos=<folder|glob|list file> [output=<csv>]"""

import hydra
from omegaconf import DictConfig

from src.experiments import cli
from src.experiments.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    from src.experiments.predict import predict

    predict(cfg)


if __name__ == "__main__":
    cli.run(main, task="predict")
