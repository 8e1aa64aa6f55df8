"""``python -m openhelix_sim.experiments``: see :mod:`openhelix_sim.experiments.cli`."""
import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned demo worker imports the main module
    sys.exit(main())
