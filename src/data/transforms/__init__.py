"""Transforms of face crops: what a transform declares (pipelines.py), training augmentation (train.py),
test-time perturbations (perturbations.py), self-blended images (sbi.py), the batched path (batched.py)."""
