"""Score video files: python predict.py video=<file> | videos=<folder|glob|list file> [output=<csv>]"""

import hydra
from omegaconf import DictConfig

from src.experiments import cli
from src.experiments.config import CONFIG_DIR
from src.experiments.extras import apply_extras


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    from src.experiments.predict import predict

    with cli.clean_user_errors():
        apply_extras(cfg)
        predict(cfg)


if __name__ == "__main__":
    cli.run(main, task="predict")
