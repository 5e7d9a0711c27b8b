import pytest
import torch

from training.data.utterance import EMOTIONS
from training.models.student import Student, build_classifier, load_student, save_student


def _padded(xs):
    batch = torch.zeros(len(xs), max(len(x) for x in xs))
    for i, x in enumerate(xs):
        batch[i, : len(x)] = x
    return batch, torch.tensor([len(x) for x in xs])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name", ["tiny", "tiny-layer", "tiny-mel", "tiny-whisper"])
def test_batched_logits_equal_single(name, weighted):
    torch.manual_seed(0)
    classifier = build_classifier(name, EMOTIONS, use_weighted_layer_sum=weighted)
    if weighted:  # learned weights, not the uniform start, so every layer's output matters
        with torch.no_grad():
            classifier.layer_weights.copy_(torch.randn_like(classifier.layer_weights))
    student = Student(classifier).eval()
    xs = [torch.randn(n) for n in (16000, 8000, student.min_samples + 1, 23456)]
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


@pytest.mark.parametrize("name", ["tiny", "tiny-mel", "tiny-whisper"])
def test_save_load_roundtrip(tmp_path, name):
    torch.manual_seed(0)
    classifier = build_classifier(name, EMOTIONS, use_weighted_layer_sum=True)
    with torch.no_grad():
        classifier.layer_weights.copy_(torch.randn_like(classifier.layer_weights))
    student = Student(classifier, {"ling": 8}).eval()
    save_student(student, tmp_path)
    again = load_student(tmp_path).eval()
    x = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 5000])
    with torch.no_grad():
        assert torch.equal(student(x, lengths)[0], again(x, lengths)[0])
    assert again.labels == list(EMOTIONS)
    assert set(again.projections) == {"ling"}
    assert again.layer_weights == student.layer_weights


@pytest.mark.parametrize(("name", "expected"), [("tiny", 400), ("tiny-mel", 720)])
def test_min_samples_is_the_shortest_input_with_a_frame(name, expected):
    student = Student(build_classifier(name, EMOTIONS)).eval()
    assert student.min_samples == expected
    lengths = torch.tensor([expected - 1, expected])
    assert student.frame_lengths(lengths).tolist() == [0, 1]
    with torch.no_grad():
        student(torch.randn(1, expected), lengths[1:])  # runs
        with pytest.raises(RuntimeError):
            student(torch.randn(1, expected - 1), lengths[:1])


def test_log_mel_front_end_matches_a_reference_spectrogram():
    """The in-graph log-mel (conv with a windowed DFT basis) equals torch.stft + the filterbank."""
    from training.models.mel_hubert import LOG_FLOOR, LogMelFeatureEncoder, MelHubertConfig

    config = MelHubertConfig()
    encoder = LogMelFeatureEncoder(config)
    x = torch.randn(2, 16000)
    window = torch.hann_window(config.n_fft)
    spec = torch.stft(x, config.n_fft, config.hop_length, window=window, center=False,
                      return_complex=True).abs() ** 2  # fmt: skip
    reference = torch.log(encoder.mel @ spec + LOG_FLOOR)
    assert torch.allclose(encoder.log_mel(x), reference, atol=1e-3)
    # Every filter covers some frequency bins and the bank spans 20 Hz - 8 kHz.
    assert (encoder.mel.sum(1) > 0).all() and encoder.mel.shape == (config.n_mels, 201)


def test_log_mel_stays_float32_under_bf16_autocast():
    from training.models.mel_hubert import LogMelFeatureEncoder, MelHubertConfig

    encoder = LogMelFeatureEncoder(MelHubertConfig())
    x = torch.randn(2, 8000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = encoder.log_mel(x)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, encoder.log_mel(x))


def test_masked_group_norm_statistics_stay_float32_under_bf16_autocast():
    """Under bf16 autocast the masked GroupNorm once computed its mean, variance and frame
    count (up to ~1e5 frames) in bf16, shifting every frame of a channel by the rounding of its
    statistics. Reference: the same bf16 convolution output normalised in float64; only the
    output's own bf16 rounding (unbiased) may remain."""
    from training.models.student import MaskedGroupNormConvLayer, masked_normalise

    torch.manual_seed(0)
    student = Student(build_classifier("tiny", EMOTIONS)).eval()
    layer = student.classifier.base_model.feature_extractor.conv_layers[0]
    assert isinstance(layer, MaskedGroupNormConvLayer)
    frames = 100_000
    samples = frames * layer.conv.stride[0] + layer.conv.kernel_size[0]
    audio = masked_normalise(torch.randn(1, samples), torch.tensor([samples]))[:, None, :]
    layer.lengths = torch.tensor([samples - 7])  # the last frame is padding
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        conv = layer.conv(audio).double()
        out = layer(audio)
    layer.lengths = None
    assert out.dtype == torch.bfloat16
    valid = conv[..., : frames - 1]
    norm = layer.layer_norm
    ref = (conv - valid.mean(-1, keepdim=True)) / torch.sqrt(
        valid.var(-1, unbiased=False, keepdim=True) + norm.eps
    )
    ref = torch.nn.functional.gelu(
        ref * norm.weight.double()[:, None] + norm.bias.double()[:, None]
    )
    bias = (out.double() - ref)[..., : frames - 1].mean(-1).abs().max()
    assert bias < 5e-4  # bf16 statistics: 2.5e-3


def test_time_masking_skips_batches_shorter_than_a_mask_span():
    """HuBERT's time masking (mask_time_length 10 frames) raised on a batch of clips under
    ~0.2 s while training; such a batch is now unmasked, and a longer batch is still masked:
    some of its frames enter the transformer as HuBERT's learned mask embedding."""
    torch.manual_seed(0)
    student = Student(build_classifier("tiny", EMOTIONS)).train()
    assert student.config.mask_time_prob > 0
    base = student.classifier.base_model
    masked_frames = []
    apply_mask = base._mask_hidden_states

    def counting(*args, **kwargs):
        hidden = apply_mask(*args, **kwargs)
        masked_frames.append(int((hidden == base.masked_spec_embed).all(-1).sum()))
        return hidden

    base._mask_hidden_states = counting
    short = torch.randn(2, 2000)  # 6 frames
    logits, _ = student(short, torch.tensor([2000, 1500]))
    logits.sum().backward()
    long = torch.randn(2, 16000)
    student(long, torch.tensor([16000, 12000]))
    assert masked_frames[0] == 0 and masked_frames[1] > 0
