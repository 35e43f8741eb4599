"""`python -m service.cli` is the `sidetask` command too, as `python -m service` is."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
