"""`python -m gpugrad.app.cli`: the `gpugrad` command."""

import sys

from gpugrad.app.cli import main

sys.exit(main())
