"""The Whisper-encoder student: level normalisation and Whisper's log-mel in the graph, variable
length, freezing."""

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from training.data.utterance import EMOTIONS
from training.models.student import Student, build_classifier
from training.models.whisper_encoder import (
    INPUT_LEVEL_DBFS,
    encoder_frames,
    mel_frames,
    normalise_level,
)

# fp32 DFT by convolution vs the extractor's numpy STFT: log10 units, values ~[-1, 2].
FRONT_END_TOLERANCE = 1e-4


def whisper_student(**overrides) -> Student:
    torch.manual_seed(0)
    return Student(build_classifier("tiny-whisper", EMOTIONS, **overrides)).eval()


# Up to 30 s less a window: the extractor pads shorter audio with zeros, as the graph does; at
# exactly 30 s it reflects the last 200 samples instead, and only its last frame differs.
@pytest.mark.parametrize("samples", [400, 12_345, 3 * 16_000 + 77, 30 * 16_000 - 200])
def test_log_mel_matches_whisper_feature_extractor_on_valid_frames(samples):
    rng = np.random.default_rng(samples)
    # Speech-like level with a loud burst, so the max - 8 clamp is exercised.
    audio = (0.05 * rng.standard_normal(samples)).astype(np.float32)
    audio[: samples // 10] *= 20
    reference = WhisperFeatureExtractor()(audio, sampling_rate=16_000, return_tensors="np")
    reference = reference.input_features[0]
    student = whisper_student()
    lengths = torch.tensor([samples])
    ours = student.classifier.log_mel(torch.from_numpy(audio)[None], lengths)[0].numpy()
    frames = int(mel_frames(lengths))
    assert frames == samples // 160
    assert np.abs(ours[:, :frames] - reference[:, :frames]).max() <= FRONT_END_TOLERANCE


def test_normalise_level_sets_zero_mean_and_the_rms_over_valid_samples():
    audio = torch.zeros(3, 20_000)
    audio[0] = 0.3 * torch.randn(20_000) + 0.1
    audio[1, :9_000] = 0.05 * torch.randn(9_000) - 0.05
    lengths = torch.tensor([20_000, 9_000, 5_000])  # the third row: silent
    out = normalise_level(audio, lengths, -23.0)
    for row, n in zip(out[:2], (20_000, 9_000), strict=True):
        valid = row[:n].double()
        assert abs(float(valid.mean())) <= 1e-6
        assert abs(20 * float(valid.square().mean().sqrt().log10()) - -23.0) <= 1e-3
    assert torch.equal(out[1, 9_000:], torch.zeros(11_000))
    assert torch.equal(out[2], torch.zeros(20_000))  # no division by zero: stays silent
    alone = normalise_level(audio[1:2, :9_000], lengths[1:2], -23.0)
    assert (out[1, :9_000] - alone[0]).abs().max() <= 1e-7


def test_a_silent_row_gives_finite_outputs():
    student = whisper_student()
    with torch.no_grad():
        logits, embedding = student(torch.zeros(2, 8_000), torch.tensor([8_000, 4_000]))
    assert torch.isfinite(logits).all() and torch.isfinite(embedding).all()


def test_the_level_is_saved_with_the_checkpoint_and_used(tmp_path):
    """config.input_level_dbfs: the default for a new student, kept by save/load, and what the
    graph scales to (another level gives other logits)."""
    student = whisper_student()
    assert student.config.input_level_dbfs == INPUT_LEVEL_DBFS
    student.config.input_level_dbfs = -40.0
    student.classifier.save_pretrained(tmp_path)
    again = Student(build_classifier(str(tmp_path), EMOTIONS)).eval()
    assert again.config.input_level_dbfs == -40.0
    audio, lengths = 0.1 * torch.randn(1, 16_000), torch.tensor([16_000])
    with torch.no_grad():
        quiet, _ = again(audio, lengths)
        again.config.input_level_dbfs = INPUT_LEVEL_DBFS
        default, _ = again(audio, lengths)
    assert (quiet - default).abs().max() > 1e-4


def test_log_mel_ignores_what_follows_a_row():
    """Garbage (not zeros) after a row's length changes nothing: the graph masks it."""
    student = whisper_student()
    audio = torch.randn(1, 16_000) * 0.1
    noisy = torch.cat([audio, torch.randn(1, 8_000)], dim=1)
    with torch.no_grad():
        clean, _ = student(audio, torch.tensor([16_000]))
        padded, _ = student(noisy, torch.tensor([16_000]))
    assert (clean - padded).abs().max() <= 1e-5


def test_frames_follow_whisper_strides():
    lengths = torch.tensor([400, 16_000, 30 * 16_000])
    assert mel_frames(lengths).tolist() == [2, 100, 3000]
    assert encoder_frames(lengths).tolist() == [1, 50, 1500]


def test_longer_than_the_position_table_is_a_clear_error():
    student = whisper_student()
    with torch.no_grad(), pytest.raises(ValueError, match="30 s"):
        student(torch.zeros(1, 31 * 16_000), torch.tensor([31 * 16_000]))


def test_freeze_layers_freezes_the_front_end_and_the_lowest_layers():
    student = whisper_student()
    student.freeze_layers(1)
    encoder = student.classifier.encoder
    frozen = {n for n, p in student.named_parameters() if not p.requires_grad}
    assert all(not p.requires_grad for p in encoder.conv1.parameters())
    assert all(not p.requires_grad for p in encoder.layers[0].parameters())
    assert all(p.requires_grad for p in encoder.layers[1].parameters())
    assert not any("classifier.classifier" in n or "projector" in n for n in frozen)
    with pytest.raises(ValueError, match="has 2"):
        student.freeze_layers(3)


def test_hubert_freeze_layers_keeps_the_upper_layers_trainable():
    torch.manual_seed(0)
    student = Student(build_classifier("tiny-layer", EMOTIONS))
    student.freeze_layers(1)
    base = student.classifier.base_model
    assert not any(p.requires_grad for p in base.feature_extractor.parameters())
    assert not any(p.requires_grad for p in base.encoder.layers[0].parameters())
    assert all(p.requires_grad for p in base.encoder.layers[1].parameters())


def test_loads_a_plain_whisper_checkpoint(tmp_path):
    """A WhisperForConditionalGeneration checkpoint (what the hub and the converter hold) loads
    as the student: every encoder weight is taken, the decoder is dropped."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from training.models.student import NAMED_CONFIGS

    torch.manual_seed(1)
    config = WhisperConfig(
        **{k: v for k, v in NAMED_CONFIGS["tiny-whisper"].items() if k != "classifier_proj_size"}
    )
    source = WhisperForConditionalGeneration(config)
    source.save_pretrained(tmp_path)
    student = Student(build_classifier(str(tmp_path), EMOTIONS, use_weighted_layer_sum=True))
    theirs = source.model.encoder.state_dict()
    ours = student.classifier.encoder.state_dict()
    assert set(theirs) == set(ours)
    for key, value in theirs.items():
        assert torch.equal(value, ours[key]), key
    assert student.config.model_type == "emodistill_whisper"
    assert student.layer_weights is not None and len(student.layer_weights) == 3


def test_backward_stops_at_the_lowest_trainable_layer_of_a_loaded_checkpoint(tmp_path):
    """Whisper's positions are fixed: loading a checkpoint must not make them trainable, or the
    backward pass runs through every frozen layer to reach them (it did: ~30% of a demo step)."""
    whisper_student().classifier.save_pretrained(tmp_path)
    student = Student(build_classifier(str(tmp_path), EMOTIONS, use_weighted_layer_sum=True))
    student.freeze_layers(1)
    student.train()
    audio, lengths = torch.randn(2, 16_000) * 0.1, torch.tensor([16_000, 12_000])
    states = student.classifier.hidden_states(audio, lengths)
    assert not states[0].requires_grad and not states[1].requires_grad
    assert states[2].requires_grad
    logits, embedding = student(audio, lengths)
    (logits.sum() + embedding.sum()).backward()
    assert student.classifier.encoder.embed_positions.weight.grad is None
    assert student.classifier.encoder.layers[1].fc1.weight.grad is not None


def test_training_evaluation_scores_clips_longer_than_30_s(tmp_path):
    """Whole-clip evaluation clips to the encoder's 30 s instead of failing."""
    import soundfile as sf
    from accelerate import Accelerator

    from training.fit.batches import AudioSet
    from training.fit.loop import predict

    student = whisper_student()
    assert student.max_samples == 30 * 16_000
    paths = []
    for seconds in (31.0, 2.0):
        paths.append(tmp_path / f"{seconds}.wav")
        sf.write(paths[-1], 0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16_000)),
                 16_000)  # fmt: skip
    data = AudioSet([str(p) for p in paths], np.array([0, 1]))
    logits, _ = predict(student, data, 2, Accelerator(cpu=True))
    with torch.no_grad():
        first_30_s = torch.from_numpy(data.samples(0)[: student.max_samples])[None]
        alone, _ = student(first_30_s, torch.tensor([student.max_samples]))
    assert np.abs(logits[0] - alone[0].numpy()).max() <= 1e-4
