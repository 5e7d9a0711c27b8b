"""``python -m training`` is ``python -m training.distill``."""

import sys

from training.distill import main

sys.exit(main())
