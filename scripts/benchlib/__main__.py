"""`python -m benchlib` (with scripts/ on the path) is scripts/bench."""

import sys

from .main import main

sys.exit(main())
