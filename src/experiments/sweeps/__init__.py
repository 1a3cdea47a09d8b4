"""Around a sweep's jobs: Hydra callbacks (callbacks.py), the files a sweep and its jobs share (files.py), and
Optuna's trials (trials.py) and storage (optuna_storage.py)."""
