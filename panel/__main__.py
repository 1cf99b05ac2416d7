"""Entry point: python -m panel ... (guarded: vLLM starts its engine core with spawn)."""

from __future__ import annotations

import sys

from panel.cli import main

if __name__ == "__main__":
    sys.exit(main())
