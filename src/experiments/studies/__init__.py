"""Commands built on the tasks: `make demo` (demo.py), `make cross-dataset` (cross_dataset.py), `make audit`
(audit.py, model_audit.py) and `make selection` (selection_inflation.py)."""
