"""`python -m service` is the `sidetask` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
