import dataclasses

import pytest
import torch
import torch.nn.functional as F

from training.fit.losses import VARIANTS, LossWeights, distill_loss, embedding_loss, kd_loss


def _batch(seed=0, n=6, c=4, d=8):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g)
    projected = {t: torch.randn(n, d, generator=g) for t in ("ling", "pros")}
    targets = {
        t: {"logits": torch.randn(n, c, generator=g), "embedding": torch.randn(n, d, generator=g)}
        for t in ("ling", "pros")
    }
    labels = torch.randint(0, c, (n,), generator=g)
    return logits, projected, labels, targets


def test_kd_matches_definition():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    temp = 3.0
    p_t = F.softmax(t / temp, -1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / temp, -1))).sum(-1).mean() * temp**2
    assert kd_loss(s, t, temp).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_is_zero_only_for_equal_distributions():
    s = torch.randn(5, 4)
    assert kd_loss(s, s + 7.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    assert kd_loss(s, -s, 2.0).item() > 0.1


def test_embedding_losses():
    a = torch.randn(4, 8)
    assert embedding_loss(a, 2 * a, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_loss(a, -a, "cosine").item() == pytest.approx(2.0, abs=1e-5)
    assert embedding_loss(a, a + 1, "mse").item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown embedding loss"):
        embedding_loss(a, a, "l1")


def test_zero_weights_leave_cross_entropy():
    logits, projected, labels, targets = _batch()
    weights = LossWeights(a_ling=0, a_pros=0, b_ling=0, b_pros=0)
    total, terms = distill_loss(logits, projected, labels, targets, weights)
    assert total.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert set(terms) == {"ce"}


def test_total_is_the_weighted_sum():
    logits, projected, labels, targets = _batch(1)
    w = LossWeights(
        a_ling=0.5, a_pros=2.0, b_ling=3.0, b_pros=0.25, temperature=2.0, emb_loss="mse"
    )
    total, terms = distill_loss(logits, projected, labels, targets, w)
    expected = (
        terms["ce"]
        + 0.5 * terms["kd_ling"]
        + 2.0 * terms["kd_pros"]
        + 3.0 * terms["emb_ling"]
        + 0.25 * terms["emb_pros"]
    )
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert terms["emb_ling"] == pytest.approx(
        F.mse_loss(projected["ling"], targets["ling"]["embedding"]).item(), rel=1e-5
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_switch_terms(variant):
    logits, projected, labels, targets = _batch(2)
    w = LossWeights().for_variant(variant)
    _, terms = distill_loss(logits, projected, labels, targets, w)
    on = {
        f"{'kd' if k[0] == 'a' else 'emb'}_{k[2:]}"
        for k, keep in VARIANTS[variant].items()
        if keep and k[0] in "ab"
    }
    assert set(terms) == {"ce"} | on
    assert w.uses_teachers == bool(on)


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant"):
        LossWeights().for_variant("everything")


def test_kd_gradient_pulls_student_towards_teacher():
    s = torch.zeros(1, 4, requires_grad=True)
    t = torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    kd_loss(s, t, 2.0).backward()
    assert s.grad[0, 0] < 0 and (s.grad[0, 1:] > 0).all()


def test_confidence_weighting_follows_the_teacher_that_knows_the_label():
    """The linguistic teacher is sure of the true label, the prosodic one gives it ~0: the
    prosodic terms vanish and the linguistic ones count twice (the weights average 1)."""
    logits, projected, labels, targets = _batch(3)
    onehot = F.one_hot(labels, logits.shape[1]).float()
    targets["ling"]["logits"] = 30.0 * onehot
    targets["pros"]["logits"] = -30.0 * onehot
    w = LossWeights(teacher_weighting="confidence")
    total, terms = distill_loss(logits, projected, labels, targets, w)
    expected = terms["ce"] + 2 * (terms["kd_ling"] + terms["emb_ling"])
    assert total.item() == pytest.approx(expected, rel=1e-4)
    assert terms["w_ling"] == pytest.approx(2.0, abs=1e-4)
    assert terms["w_pros"] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("variant", ["ce+ling", "ce+pros", "ce_only"])
def test_confidence_weighting_with_one_teacher_is_the_fixed_loss(variant):
    logits, projected, labels, targets = _batch(4)
    fixed, _ = distill_loss(logits, projected, labels, targets, LossWeights().for_variant(variant))
    weights = LossWeights(teacher_weighting="confidence").for_variant(variant)
    assert weights.teacher_weighting == "confidence"
    confident, _ = distill_loss(logits, projected, labels, targets, weights)
    assert confident.item() == pytest.approx(fixed.item(), rel=1e-6)


@pytest.mark.parametrize("weighting", ["fixed", "confidence"])
def test_a_teacher_that_does_not_apply_to_an_utterance_is_left_out_there(weighting):
    """The linguistic teacher marked as not applying to the first 3 of 6 utterances (a
    scripted corpus): their loss is the prosodic-only student's, the others' the full one."""
    logits, projected, labels, targets = _batch(7)
    applies = torch.tensor([0.0, 0, 0, 1, 1, 1])
    marked = {**targets, "ling": {**targets["ling"], "applies": applies}}
    w = LossWeights(teacher_weighting=weighting)
    total, terms = distill_loss(logits, projected, labels, marked, w)

    def part(rows, variant):
        pick = {t: {k: v[rows] for k, v in p.items()} for t, p in targets.items()}
        proj = {t: v[rows] for t, v in projected.items()}
        out, _ = distill_loss(logits[rows], proj, labels[rows], pick, w.for_variant(variant))
        return out.item()

    expected = (part(slice(0, 3), "ce+pros") + part(slice(3, 6), "full")) / 2
    assert total.item() == pytest.approx(expected, rel=1e-5)
    if weighting == "confidence":
        unmarked = distill_loss(logits, projected, labels, targets, w)[1]
        assert terms["w_ling"] < unmarked["w_ling"]


def test_an_utterance_no_teacher_applies_to_learns_from_its_label_only():
    logits, projected, labels, targets = _batch(8)
    none = {t: {**p, "applies": torch.zeros(len(labels))} for t, p in targets.items()}
    for weighting in ("fixed", "confidence"):
        w = LossWeights(teacher_weighting=weighting)
        total, terms = distill_loss(logits, projected, labels, none, w)
        assert total.item() == pytest.approx(terms["ce"], rel=1e-6)


def test_unknown_teacher_weighting_is_refused():
    logits, projected, labels, targets = _batch(5)
    with pytest.raises(ValueError, match="fixed | confidence"):
        distill_loss(logits, projected, labels, targets, LossWeights(teacher_weighting="vote"))


def _rated(seed=6, n=8):
    g = torch.Generator().manual_seed(seed)
    truth = 1 + 4 * torch.rand(n, 3, generator=g)
    pred = 1 + 4 * torch.rand(n, 3, generator=g)
    teachers = {t: 1 + 4 * torch.rand(n, 3, generator=g) for t in ("ling", "pros")}
    return pred, truth, teachers


def test_ccc_matches_its_definition_and_bounds():
    from training.fit.losses import ccc, ccc_loss

    pred, truth, _ = _rated()
    assert ccc_loss(truth, truth).item() == pytest.approx(0.0, abs=1e-6)
    assert ccc_loss(6 - truth, truth).item() > 1.0  # anti-correlated: CCC < 0
    p, t = pred[:, 0].double(), truth[:, 0].double()
    cov = ((p - p.mean()) * (t - t.mean())).mean()
    expected = (
        2 * cov / (p.var(unbiased=False) + t.var(unbiased=False) + (p.mean() - t.mean()) ** 2)
    )
    assert ccc(pred, truth)[0].item() == pytest.approx(expected.item(), rel=1e-5)
    # A constant offset costs CCC (a correlation would not notice it).
    assert ccc(truth + 1.0, truth).min().item() < 0.9


def test_ccc_masks_unrated_utterances():
    from training.fit.losses import ccc_loss

    pred, truth, _ = _rated()
    holes = truth.clone()
    holes[2:5] = float("nan")
    keep = torch.ones(len(truth), dtype=torch.bool)
    keep[2:5] = False
    assert ccc_loss(pred, holes).item() == pytest.approx(ccc_loss(pred[keep], truth[keep]).item())
    holes[1:] = float("nan")
    assert ccc_loss(pred, holes) is None  # one rated utterance: no correlation to speak of


def test_dimension_terms_are_weighted_and_need_the_head():
    logits, projected, labels, targets = _batch(7, n=8)
    pred, truth, teachers = _rated()
    for t in targets:
        targets[t]["dimensions"] = teachers[t]
    w = LossWeights(a_ling=0, a_pros=0, b_ling=0, b_pros=0, c_ling=0.5, c_pros=2.0, dim=3.0)
    total, terms = distill_loss(logits, projected, labels, targets, w, pred, truth)
    expected = terms["ce"] + 3.0 * terms["ccc"] + 0.5 * terms["dim_ling"] + 2.0 * terms["dim_pros"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    # MSE in normalised units: -1..1 spans the 1-5 scale, so a difference of 2 points is 1.
    assert terms["dim_ling"] == pytest.approx(
        (((pred - teachers["ling"]) / 2) ** 2).mean().item(), rel=1e-5
    )
    # Without the CCC term there is no head: the teachers' dimensions are not distilled either.
    _, terms = distill_loss(
        logits, projected, labels, targets, dataclasses.replace(w, dim=0.0), pred, truth
    )
    assert set(terms) == {"ce"}


def test_dimension_variants():
    w = LossWeights(c_ling=1.0, c_pros=1.0, dim=1.0)
    assert w.for_variant("full").dimension_teachers == ["ling", "pros"]
    assert w.for_variant("full_no_dim_kd").dimension_teachers == []
    assert w.for_variant("full_no_dim_kd").dimensions
    assert not w.for_variant("no_dims").dimensions
    assert w.for_variant("ce+ling").dimension_teachers == ["ling"]
    assert w.for_variant("ce_only").dimensions and not w.for_variant("ce_only").uses_teachers


def test_a_transfer_utterance_contributes_no_cross_entropy_only_the_teachers_terms():
    """Label -1 marks a transfer-set utterance: its logits get no gradient from CE (whatever
    class it might be), only from KD and the embedding terms, at the transfer temperature."""
    logits, projected, labels, targets = _batch(n=4)
    labels[2] = -1
    ce_only = LossWeights(0.0, 0.0, 0.0, 0.0)
    x = logits.clone().requires_grad_(True)
    loss, terms = distill_loss(x, projected, labels, targets, ce_only)
    loss.backward()
    assert torch.all(x.grad[2] == 0) and torch.all(x.grad[[0, 1, 3]].abs().sum(-1) > 0)
    keep = labels >= 0
    assert loss.item() == pytest.approx(F.cross_entropy(logits[keep], labels[keep]).item())

    weights = LossWeights(1.0, 1.0, 1.0, 1.0, temperature=2.0, transfer_temperature=4.0)
    only = torch.tensor([2])  # the transfer utterance alone: teachers' terms, no "ce"
    part = {t: {k: v[only] for k, v in d.items()} for t, d in targets.items()}
    proj = {t: v[only] for t, v in projected.items()}
    loss, terms = distill_loss(logits[only], proj, labels[only], part, weights)
    assert "ce" not in terms
    expected = sum(
        kd_loss(logits[only], part[t]["logits"], 4.0)
        + embedding_loss(proj[t], part[t]["embedding"], "cosine")
        for t in ("ling", "pros")
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # in a mixed batch it is the same term: the labelled rows keep T=2 and their CE
    mixed, _ = distill_loss(logits, projected, labels, targets, weights)
    rest = torch.tensor([0, 1, 3])
    labelled, _ = distill_loss(
        logits[rest], {t: v[rest] for t, v in projected.items()}, labels[rest],
        {t: {k: v[rest] for k, v in d.items()} for t, d in targets.items()}, weights,
    )  # fmt: skip
    # the teachers' terms are means over the batch's 4 rows, CE over its 3 labelled ones
    ce = F.cross_entropy(logits[rest], labels[rest])
    assert mixed.item() == pytest.approx(
        (ce + (3 * (labelled - ce) + expected) / 4).item(), rel=1e-5
    )


def test_confidence_weighting_gives_transfer_utterances_weight_one():
    logits, projected, labels, targets = _batch(n=4)
    labels[:] = -1
    weights = LossWeights(1.0, 1.0, 0.0, 0.0, teacher_weighting="confidence")
    _, terms = distill_loss(logits, projected, labels, targets, weights)
    assert terms["w_ling"] == pytest.approx(1.0) and terms["w_pros"] == pytest.approx(1.0)
