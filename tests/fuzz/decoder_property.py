"""The decoder's property, checked by the atheris target (tests/fuzz/fuzz_audio.py) and by
the replay of its kept corpus (tests/emocore/test_fuzz_corpus.py)."""

from __future__ import annotations

import tracemalloc

from emocore.audio import AudioError, decode_budget_bytes, load_audio

MAX_SECONDS = 30.0
BUDGET = decode_budget_bytes(MAX_SECONDS)


def check(data: bytes) -> None:
    """The property: AudioError with a clean message, or finite samples within the limit;
    the decode's traced peak within the budget."""
    tracemalloc.start()
    try:
        samples = load_audio(data, max_seconds=MAX_SECONDS)
    except AudioError as exc:
        assert exc.code and exc.message, exc
        assert "object at 0x" not in exc.message and "<_io" not in exc.message, exc.message
    else:
        assert samples.ndim == 1 and len(samples) <= MAX_SECONDS * 16_000
        assert bool((abs(samples) < 1e4).all()), "non-finite or absurd samples escaped"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= BUDGET, f"decode peak {peak} over the {BUDGET} budget"
