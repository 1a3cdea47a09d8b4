"""`python -m src.experiments.report`: see the package docstring."""

import sys

from src.experiments.report import main

if __name__ == "__main__":  # importing this module (a test of what the report loads) runs nothing
    sys.exit(main())
