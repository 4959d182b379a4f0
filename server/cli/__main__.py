"""``python -m server.cli``: what the supervisor starts the learner with."""

import sys

from server.cli.app import main

sys.exit(main())
