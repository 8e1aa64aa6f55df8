"""``python -m openhelix_core.training`` (or under ``torchrun``): see :mod:`.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
