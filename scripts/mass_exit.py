"""Print the mass-exit report of a run: `python scripts/mass_exit.py RUN_DIR`.

Made for `configs/plasma-mass-exit.toml` (a withholding operator, 20 users, a contended
layer 1), but it reads any run with plasma exits.
"""

import json
import sys

from p2p_l2.plasma.report import load_logs, mass_exit_report

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(json.dumps(mass_exit_report(load_logs(sys.argv[1])), indent=2))
