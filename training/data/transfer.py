"""The unlabelled transfer set and the vocabulary probe: two synthetic corpora around the
labelled one, both spoken by voices that no labelled corpus uses.

- The **transfer set** (``transfer_set``) speaks sentences of the lexicon's ``labelled`` and
  ``transfer`` parts (``training.data.lexicon``) with random prosody: each utterance's prosody
  is drawn from a random emotion, independent of its words (``p_prosody`` = 1/classes). Its
  labels are never used: the teachers' soft targets are all the student learns from it.
- The **vocabulary probe** (``probe_sets``) has one corpus per lexicon part (``seen``: the
  labelled words and frames; ``transfer``; ``novel``: words and frames in no training data).
  Every probe utterance's words carry its label and its prosody another emotion's
  (``p_words`` 1, ``p_prosody`` 0): what a model gets right there, it heard in the words.

Both are generated once into their folders (a function of their settings; a folder that holds
other settings is an error, never silently reused).
"""

from __future__ import annotations

import json
from pathlib import Path

from training.data import lexicon
from training.data.manifest import load_manifest
from training.data.synthetic import MANIFEST_NAME, SUMMARY_NAME, SyntheticConfig, generate
from training.data.utterance import EMOTIONS, Utterance

# Other accents (Scottish, Caribbean, received pronunciation, New York) than the labelled
# corpora's US voices, and other variants than the transfer set's.
PROBE_VOICES = ("en-gb-scotland+f2", "en-029+m2", "en-gb-x-rp+f3", "en-us-nyc+m5")
TRANSFER_VOICES = (
    "en+m3", "en+f2", "en+klatt4", "en-029+f1", "en-gb-x-rp+m1", "en-us+klatt5",
    "en-gb-scotland+m4", "en-us-nyc+f4",
)  # fmt: skip
PROBE_PARTS = {"seen": "labelled", "transfer": "transfer", "novel": "novel"}
PROBE_SEED = 100
TRANSFER_PREFIX = "transfer"


class TransferSetError(ValueError):
    """A transfer or probe folder that holds another corpus than the settings ask for."""


def transfer_config(n: int, seed: int, labels: tuple[str, ...] = EMOTIONS) -> SyntheticConfig:
    words, frames = lexicon.vocabulary("labelled", "transfer")
    return SyntheticConfig(
        n=n, seed=seed, voices=TRANSFER_VOICES, labels=labels, p_words=1.0,
        p_prosody=1.0 / len(labels), adjectives=words, templates=frames,
        id_prefix=TRANSFER_PREFIX,
    )  # fmt: skip


def probe_config(part: str, n: int, labels: tuple[str, ...] = EMOTIONS) -> SyntheticConfig:
    words, frames = lexicon.vocabulary(PROBE_PARTS[part])
    return SyntheticConfig(
        n=n, seed=PROBE_SEED + list(PROBE_PARTS).index(part), voices=PROBE_VOICES,
        labels=labels, p_words=1.0, p_prosody=0.0, adjectives=words, templates=frames,
        id_prefix=f"probe_{part}",
    )  # fmt: skip


def _fingerprint(config: SyntheticConfig) -> dict:
    return {
        "n": config.n, "seed": config.seed, "voices": list(config.voices),
        "p_words": config.p_words, "p_prosody": config.p_prosody,
    }  # fmt: skip


def ensure(config: SyntheticConfig, root: Path, progress: bool = True) -> list[Utterance]:
    """The corpus of ``config`` in ``root`` (generated when missing), as utterances."""
    root = Path(root)
    if (root / MANIFEST_NAME).is_file():
        summary = json.loads((root / SUMMARY_NAME).read_text(encoding="utf-8"))
        found = {
            "n": summary["n"], "seed": summary["seed"], "voices": summary["config"]["voices"],
            "p_words": summary["config"]["p_words"], "p_prosody": summary["config"]["p_prosody"],
        }  # fmt: skip
        if found != _fingerprint(config):
            raise TransferSetError(
                f"{root} holds a corpus made with {found}, the settings ask for "
                f"{_fingerprint(config)}; choose another folder or delete it"
            )
    else:
        generate(config, root, progress=progress)
    return load_manifest(root / MANIFEST_NAME, config.labels)


def transfer_set(
    root: Path, n: int, seed: int, labels: tuple[str, ...] = EMOTIONS
) -> list[Utterance]:
    """The transfer set's utterances (their labels are the words' emotion: never trained on)."""
    return ensure(transfer_config(n, seed, labels), root)


def probe_sets(
    root: Path, n: int, labels: tuple[str, ...] = EMOTIONS
) -> dict[str, list[Utterance]]:
    """{probe part: utterances}: ``n`` per part, in ``root/PART``."""
    return {part: ensure(probe_config(part, n, labels), Path(root) / part) for part in PROBE_PARTS}
