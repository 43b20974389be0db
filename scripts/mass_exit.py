"""Print the mass-exit report of a run: `python scripts/mass_exit.py RUN_DIR`.

Made for `configs/plasma-mass-exit.toml` (a withholding operator, 20 users, a contended
layer 1), but it reads any run with plasma exits.  It is the `plasma.mass_exit` metric of
`p2p-l2 analyze`, alone.
"""

import json
import sys

from p2p_l2.analysis import load
from p2p_l2.analysis.metrics import mass_exit

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(json.dumps(mass_exit(load(sys.argv[1])), indent=2))
