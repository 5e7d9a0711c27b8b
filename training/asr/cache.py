"""Transcripts cached by audio content and model: one JSON line per transcribed file, appended
as each batch is done, so a killed transcription resumes where it stopped and any run that
meets the same audio with the same model (and language) reads its text instead of decoding.

``DIR/<model>-<language>.jsonl``, lines ``{"audio_sha256", "model", "language", "text"}``.
The key is the file's content (``training.features.prosody.file_digest``), not its path: a
re-recorded file is transcribed again, copies share one entry. A line cut by a kill is ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path


class TranscriptCache:
    def __init__(self, cache_dir: str | Path, model: str, language: str):
        self.model, self.language = model, language
        safe = re.sub(r"[^\w.-]+", "_", f"{model}-{language}").strip("_.")
        self.path = Path(cache_dir) / f"{safe}.jsonl"

    def load(self) -> dict[str, str]:
        """{audio sha256: text} of this model and language."""
        if not self.path.is_file():
            return {}
        texts = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed write
            if entry.get("model") == self.model and entry.get("language") == self.language:
                texts[entry["audio_sha256"]] = entry["text"]
        return texts

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def add(self, texts: Mapping[str, str]) -> None:
        """Append ``{audio sha256: text}`` and flush it to disk."""
        if not texts:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps(
                {"audio_sha256": digest, "model": self.model, "language": self.language,
                 "text": text},
                ensure_ascii=False,
            ) + "\n"
            for digest, text in texts.items()
        )  # fmt: skip
        with open(self.path, "a+", encoding="utf-8") as handle:
            if handle.tell() and not self._ends_with_newline():
                lines = "\n" + lines  # after a line cut by a kill
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
