"""Train a deepfake detector: python train.py [model=mesonet] [trainer.max_epochs=20] ..."""

import hydra
from omegaconf import DictConfig

from src.experiments.config import CONFIG_DIR, check_config, clean_user_errors, exit_on_signals, run_cleanly


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with clean_user_errors():
        check_config(cfg)  # before the heavy imports: clashing values fail in a second
        from src.experiments.train import train

        metrics = train(cfg)
    return metrics.get("val/video_auc")


if __name__ == "__main__":
    exit_on_signals()  # between a sweep's jobs too: SIGTERM/SIGINT end the process with 128 + signal
    run_cleanly(main)  # a config that does not compose: one line naming the key
