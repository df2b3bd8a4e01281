"""``python -m agent.cli``: the same as the ``vlt`` console script."""

from __future__ import annotations

import sys

from agent.cli import main

sys.exit(main())
