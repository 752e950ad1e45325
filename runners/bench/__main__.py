"""`python -m runners.bench --child NAME ...`: one benchmark scenario in its own process."""

import sys

from runners.bench import child_main

sys.exit(child_main(sys.argv[1:]))
