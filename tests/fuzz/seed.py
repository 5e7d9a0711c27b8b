"""Write the hostile corpus's raw bodies (tests/server/hostile.py) as fuzzing seeds."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from tests.server.hostile import cases


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    bodies = [c.body for c in cases() if c.body] + [
        d for c in cases() for *_, d, _ in c.files or ()
    ]
    for body in bodies:
        if len(body) <= 1 << 20:
            (folder / hashlib.sha1(body).hexdigest()).write_bytes(body)
    print(f"{len(bodies)} seeds in {folder}")


if __name__ == "__main__":
    main(sys.argv[1])
