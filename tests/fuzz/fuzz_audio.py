"""Atheris target for the decoder (emocore/audio.py): any bytes either decode within the limits
or raise AudioError with a clean message; nothing else may escape, and no decode may hold more
than its memory budget. Run by `make fuzz` for FUZZ_SECONDS (seeded with the hostile corpus);
inputs that found a bug are kept in tests/fuzz/corpus/ and replayed by
tests/emocore/test_fuzz_corpus.py in every `make test`.

    python tests/fuzz/fuzz_audio.py CORPUS_DIR [libFuzzer flags, e.g. -max_total_time=60]
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tests.fuzz.decoder_property import check


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
