import pytest
import torch

from training.data.utterance import EMOTIONS
from training.student import Student, build_classifier, load_student, save_student


def _padded(xs):
    batch = torch.zeros(len(xs), max(len(x) for x in xs))
    for i, x in enumerate(xs):
        batch[i, : len(x)] = x
    return batch, torch.tensor([len(x) for x in xs])


@pytest.mark.parametrize("name", ["tiny", "tiny-layer"])
def test_batched_logits_equal_single(name):
    torch.manual_seed(0)
    student = Student(build_classifier(name, EMOTIONS)).eval()
    xs = [torch.randn(n) for n in (16000, 8000, 401, 23456)]
    batch, lengths = _padded(xs)
    with torch.no_grad():
        logits, embedding = student(batch, lengths)
        for i, x in enumerate(xs):
            alone, emb = student(x[None], torch.tensor([len(x)]))
            assert (alone[0] - logits[i]).abs().max() < 1e-4
            assert (emb[0] - embedding[i]).abs().max() < 1e-4


def test_group_norm_without_mask_would_drift():
    """The masked first GroupNorm is what makes batching exact (the control case)."""
    torch.manual_seed(0)
    student = Student(build_classifier("tiny", EMOTIONS)).eval()
    plain = build_classifier("tiny", EMOTIONS).eval()
    plain.load_state_dict(student.classifier.state_dict())
    short, long = torch.randn(4000), torch.randn(32000)
    batch, lengths = _padded([short, long])
    mask = (torch.arange(batch.shape[1])[None] < lengths[:, None]).long()
    with torch.no_grad():
        drift = (plain(batch, attention_mask=mask).logits[0] - plain(short[None]).logits[0]).abs()
    assert drift.max() > 1e-3


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    student = Student(build_classifier("tiny", EMOTIONS), {"ling": 8}).eval()
    save_student(student, tmp_path)
    again = load_student(tmp_path).eval()
    x = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 5000])
    with torch.no_grad():
        assert torch.equal(student(x, lengths)[0], again(x, lengths)[0])
    assert again.labels == list(EMOTIONS)
    assert set(again.projections) == {"ling"}
