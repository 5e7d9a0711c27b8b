import numpy as np
import pytest
import torch

from training.data.utterance import EMOTIONS
from training.fit.teachers import FitOptions, cropping_collate, fit, predict
from training.models.teachers import LinguisticTeacher, ProsodicTeacher
from training.models.teachers.linguistic import make_collate
from training.models.teachers.prosodic import collate


def _toy_lld(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences whose class shows as a mean shift in feature 0 (varying lengths)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    feats = []
    for label in y:
        f = rng.normal(0, 1, (int(rng.integers(20, 60)), 25)).astype(np.float32)
        f[:, 0] += 1.5 * label - 2.25
        feats.append(f)
    return feats, y


def test_prosodic_teacher_ignores_padding():
    torch.manual_seed(0)
    teacher = ProsodicTeacher(4, hidden=16, layers=2).eval()
    feats, _ = _toy_lld(3, 0)
    with torch.no_grad():
        logits, emb = teacher(**collate(feats))
        for i, f in enumerate(feats):
            alone_logits, alone_emb = teacher(**collate([f]))
            assert torch.allclose(alone_logits[0], logits[i], atol=1e-5)
            assert torch.allclose(alone_emb[0], emb[i], atol=1e-5)
    assert emb.shape == (3, teacher.embedding_dim)


def test_cropping_collate_limits_frames():
    feats, _ = _toy_lld(4, 1)
    batch = cropping_collate(10, seed=0)(feats)
    assert batch["feats"].shape[1] == 10 and (batch["lengths"] == 10).all()
    assert cropping_collate(0, seed=0) is collate


def test_fit_learns_and_selects_on_validation(tmp_path):
    train, valid = _toy_lld(160, 2), _toy_lld(40, 3)
    torch.manual_seed(0)
    teacher = ProsodicTeacher(4, hidden=16, layers=1, dropout=0.0)
    opts = FitOptions(epochs=6, lr=1e-2, batch_size=16, seed=0, progress=False)
    result = fit(teacher, collate, train, valid, EMOTIONS, opts)
    assert result.valid["ua"] > 0.8  # chance is 0.25
    assert result.best_epoch == 1 + int(np.argmax([h["valid_ua"] for h in result.history]))
    assert result.valid["ua"] == pytest.approx(max(h["valid_ua"] for h in result.history))
    teacher.save(tmp_path)
    again = ProsodicTeacher.load(tmp_path)
    a = predict(teacher, collate, valid[0], 8, "cpu")
    b = predict(again, collate, valid[0], 8, "cpu")
    np.testing.assert_array_equal(a[0], b[0])


def test_linguistic_teacher_pools_and_roundtrips(tmp_path):
    teacher, tokenizer = LinguisticTeacher.from_pretrained("minilm", 4, dropout=0.0)
    teacher.eval()
    collate_text = make_collate(tokenizer, 32)
    texts = ["I am so furious about the meeting.", "Fine."]
    logits, emb = predict(teacher, collate_text, texts, 2, "cpu")
    alone, _ = predict(teacher, collate_text, texts[1:], 1, "cpu")
    assert logits.shape == (2, 4) and emb.shape == (2, teacher.embedding_dim)
    np.testing.assert_allclose(alone[0], logits[1], atol=1e-4)  # padding does not leak
    teacher.save(tmp_path, tokenizer)
    again, tok = LinguisticTeacher.load(tmp_path)
    np.testing.assert_allclose(
        predict(again, make_collate(tok, 32), texts, 2, "cpu")[0], logits, atol=1e-5
    )
