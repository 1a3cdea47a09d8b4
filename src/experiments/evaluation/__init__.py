"""What an evaluate run computes from its scores: metrics with intervals, the validation threshold and the CSV
(scores.py), per-subset metrics (subsets.py), pictures (plots.py) and class-activation maps (explain.py)."""
