"""`python -m src.experiments.report`: see the package docstring."""

import sys

from src.experiments.report import main

sys.exit(main())
