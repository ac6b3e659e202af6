"""`python -m rlhf ...` and `accelerate launch -m rlhf <stage> ...` enter here."""

import sys

from rlhf.app.cli import main

sys.exit(main())
