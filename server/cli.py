"""`python -m server.cli`: the old name of the offline scorer, `python -m server.score`.

Kept as an alias for one release; it says so on stderr and runs the scorer unchanged.
"""

from __future__ import annotations

import sys

from server.score import main

if __name__ == "__main__":
    print("note: `python -m server.cli` is now `python -m server.score`", file=sys.stderr)
    sys.exit(main())
