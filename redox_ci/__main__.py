"""``python -m redox_ci``: the redox-ci command without its console script."""

import sys

from redox_ci.cli import main

sys.exit(main())
