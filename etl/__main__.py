"""``python -m etl SUBCOMMAND ...`` is the same as ``deepcraters SUBCOMMAND ...``."""
import sys

from etl.cli import main

sys.exit(main())
