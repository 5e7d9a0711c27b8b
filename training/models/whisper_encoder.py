"""A Whisper encoder that hears raw 16 kHz audio of any length: the pretrained student family.

transformers' ``WhisperEncoder`` takes log-mel features padded to 30 s and attends over the
padding. This model keeps its modules and weights (so ``from_pretrained("openai/whisper-small")``
or a converted local checkpoint loads as usual) and changes four things:

* **level normalisation**: each row is brought to zero mean and a fixed RMS over its valid
  samples (``normalise_level``, ``config.input_level_dbfs``), so the same clip at any gain gets
  the same answer; Whisper's log-mel alone is not level-invariant (a gain g adds
  ``log10(g ** 2) / 4`` to every feature the clamps leave alone);
* **the front end is in the graph**: Whisper's log-mel (25 ms Hann window, 10 ms hop, slaney mel
  filters, log10, clamp to max - 8, ``(x + 4) / 4``) computed from the normalised audio, equal to
  ``WhisperFeatureExtractor`` on every valid frame: the audio is followed by zeros, as the
  extractor's 30 s padding is, and the clamp's maximum is taken over valid frames only;
* **variable length**: positional embeddings are sliced to the frames present, attention is masked
  to valid frames, and features past a row's end are zeroed before each convolution, so a padded
  row computes exactly what it computes alone;
* **pooling**: masked mean over valid frames, optionally of a learned softmax-weighted sum of all
  hidden layers, each layer-normalised first (``use_weighted_layer_sum``, as SUPERB does).

The file imports only torch and transformers: ``save_pretrained`` copies it beside the weights
(``auto_map``), so ``AutoModelForAudioClassification.from_pretrained(dir, trust_remote_code=True)``
loads a saved student without this package, and the pipeline feeds it raw audio.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    WhisperConfig,
    WhisperForAudioClassification,
)
from transformers.audio_utils import mel_filter_bank
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "emodistill_whisper"
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
LOG_FLOOR = 1e-10  # WhisperFeatureExtractor's clamp before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below each utterance's maximum
# The level each row is scaled to before the log-mel, in dB relative to full scale (RMS of the
# zero-mean valid samples; full scale = amplitude 1). The pretrained encoder was trained on
# audio as recorded, whose speech sits around this level: the EBU R128 broadcast loudness target
# is -23 LUFS, within a few dB of a speech recording's RMS level, and the real speech prompts
# of the test fixtures (Debian's alsa-utils and asterisk-core-sounds-en-wav) measure -18 to -23
# dBFS, the demo corpus's eSpeak voice -21.7. Saved in the config (``input_level_dbfs``), so a
# checkpoint keeps the level it was trained with.
INPUT_LEVEL_DBFS = -23.0
# Added to each row's variance before the division: an all-zero row stays zero and finite, and
# rows quieter than about -70 dBFS RMS (sqrt(1e-7)) are raised less than fully. The same floor
# as the raw-waveform students' zero-mean unit-variance normalisation.
LEVEL_EPS = 1e-7


def whisper_mel_filters(n_mels: int) -> torch.Tensor:
    """WhisperFeatureExtractor's filters, [n_mels, n_fft // 2 + 1]."""
    filters = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(filters.T.copy()).float()


def stft_basis() -> torch.Tensor:
    """Hann-windowed real DFT as conv1d weights: [2 * (N_FFT // 2 + 1), 1, N_FFT] (cos, then sin)."""
    t = torch.arange(N_FFT, dtype=torch.float64)
    k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)
    angle = 2 * torch.pi * k[:, None] * t[None] / N_FFT
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
    return (torch.cat([torch.cos(angle), torch.sin(angle)]) * window[None])[:, None, :].float()


def mel_frames(lengths: torch.Tensor) -> torch.Tensor:
    """Valid log-mel frames per row: one per hop, as WhisperFeatureExtractor (3000 for 30 s)."""
    return torch.div(lengths, HOP_LENGTH, rounding_mode="floor").clamp(min=1)


def encoder_frames(lengths: torch.Tensor) -> torch.Tensor:
    """Valid encoder frames per row: conv2 (kernel 3, stride 2, padding 1) halves the mel frames."""
    return torch.div(mel_frames(lengths) - 1, 2, rounding_mode="floor") + 1


def frame_mask(frames: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """[batch, steps] with 1 on each row's first ``frames`` steps."""
    return (torch.arange(steps, device=frames.device)[None, :] < frames[:, None]).to(dtype)


def normalise_level(audio: torch.Tensor, lengths: torch.Tensor, level_dbfs: float) -> torch.Tensor:
    """Zero mean and an RMS of ``level_dbfs`` over each row's valid samples, float32; padding
    stays zero, so a padded row is scaled as it is alone."""
    with torch.autocast(device_type=audio.device.type, enabled=False):
        audio = audio.float()
        mask = frame_mask(lengths, audio.shape[1], torch.float32)
        count = lengths.clamp(min=1).to(torch.float32)[:, None]
        mean = (audio * mask).sum(1, keepdim=True) / count
        centred = (audio - mean) * mask
        var = (centred * centred).sum(1, keepdim=True) / count
        return centred * (10.0 ** (level_dbfs / 20.0) / torch.sqrt(var + LEVEL_EPS))


class WhisperAudioConfig(WhisperConfig):
    model_type = MODEL_TYPE

    def __init__(self, input_level_dbfs: float = INPUT_LEVEL_DBFS, **kwargs):
        super().__init__(**kwargs)
        self.input_level_dbfs = input_level_dbfs


class WhisperAudioClassifier(WhisperForAudioClassification):
    """Raw audio [batch, samples] + valid lengths -> logits, pooled embedding (and hidden states)."""

    config_class = WhisperAudioConfig
    main_input_name = "input_values"

    def __init__(self, config: WhisperAudioConfig):
        super().__init__(config)
        # Constants of the front end: buffers (they follow the model's device), not saved, so
        # a plain Whisper checkpoint loads without missing keys.
        self.register_buffer("stft", stft_basis(), persistent=False)
        self.register_buffer("mel", whisper_mel_filters(config.num_mel_bins), persistent=False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # from_pretrained builds the model on the meta device: unsaved buffers are filled here
        # (during __init__, post_init runs before they exist and they are built right anyway).
        if module is self and "stft" in self._buffers:
            self.stft.copy_(stft_basis())
            self.mel.copy_(whisper_mel_filters(self.config.num_mel_bins))

    def log_mel(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[batch, samples] -> [batch, n_mels, frames], zero past each row's valid frames; the
        audio as given (``hidden_states`` normalises its level first)."""
        # Always float32: under bf16 autocast the power spectrum would lose the quiet bands.
        with torch.autocast(device_type=audio.device.type, enabled=False):
            audio = audio.float() * frame_mask(lengths, audio.shape[1], torch.float32)
            half = N_FFT // 2
            # Centred frames: reflect at the start (as torch.stft does), zeros after the end (the
            # extractor's 30 s padding), so the frames do not depend on a row's batch mates.
            left = audio[:, 1 : half + 1].flip(1)
            padded = torch.cat([left, audio, audio.new_zeros(audio.shape[0], half)], dim=1)
            spectrum = nn.functional.conv1d(padded[:, None, :], self.stft, stride=HOP_LENGTH)
            real, imag = spectrum.chunk(2, dim=1)
            power = real * real + imag * imag
            # samples // hop + 1 frames; like the extractor, drop the last (3000 frames for 30 s).
            power = power[..., :-1]
            frames = mel_frames(lengths)
            log_spec = torch.log10(torch.clamp(torch.matmul(self.mel, power), min=LOG_FLOOR))
            valid = frame_mask(frames, log_spec.shape[-1], log_spec.dtype)[:, None, :]
            peak = (log_spec * valid + (valid - 1) * 1e4).amax(dim=(1, 2), keepdim=True)
            log_spec = torch.maximum(log_spec, peak - DYNAMIC_RANGE)
            return (log_spec + 4.0) / 4.0 * valid

    def hidden_states(self, audio: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """The input embeddings and every layer's output (the last after the final LayerNorm),
        [batch, frames, d_model] each; frames past a row's end hold values nobody reads."""
        encoder = self.encoder
        audio = normalise_level(audio, lengths, self.config.input_level_dbfs)
        features = self.log_mel(audio, lengths)
        mels = features.shape[-1]
        hidden = nn.functional.gelu(encoder.conv1(features))
        hidden = hidden * frame_mask(mel_frames(lengths), mels, hidden.dtype)[:, None, :]
        hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        steps = hidden.shape[1]
        if steps > encoder.embed_positions.num_embeddings:
            raise ValueError(
                f"input of {steps} encoder frames exceeds Whisper's "
                f"{encoder.embed_positions.num_embeddings} positions (30 s)"
            )
        # Whisper's positions are fixed sinusoids (OpenAI's model keeps them in a buffer); never
        # trained here, so freezing the lowest layers also stops the backward pass below them.
        hidden = hidden + encoder.embed_positions.weight[:steps].detach()[None]
        hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=self.training)
        valid = frame_mask(encoder_frames(lengths), steps, hidden.dtype)
        mask = ((1.0 - valid) * torch.finfo(hidden.dtype).min)[:, None, None, :]
        states = [hidden]
        for layer in encoder.layers:
            hidden = layer(hidden, mask)
            states.append(hidden)
        states[-1] = encoder.layer_norm(hidden)
        return states

    def pooled(
        self, audio: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding): the projector's output averaged over each row's valid frames."""
        states = self.hidden_states(audio, lengths)
        if self.config.use_weighted_layer_sum:
            # Each layer normalised first (as SUPERB's featurizer does): Whisper's residual
            # stream grows from layer to layer, and unnormalised sums are dominated by the
            # loudest layer whatever the weights say (measured on the demo corpus: linear heads
            # reached 37 vs 44 test UA after 4 epochs). A static shape: the ONNX trace needs it.
            states = [nn.functional.layer_norm(h, (self.config.d_model,)) for h in states]
            weights = nn.functional.softmax(self.layer_weights, dim=-1)
            hidden = (torch.stack(states, dim=1) * weights.view(-1, 1, 1)).sum(dim=1)
        else:
            hidden = states[-1]
        hidden = self.projector(hidden)
        frames = encoder_frames(lengths)
        valid = frame_mask(frames, hidden.shape[1], hidden.dtype)[..., None]
        embedding = (hidden * valid).sum(1) / frames[:, None].to(hidden.dtype)
        return self.classifier(embedding), embedding

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """What the transformers pipeline calls: raw audio, and a sample mask when padded."""
        if attention_mask is None:
            lengths = torch.full(
                input_values.shape[:1], input_values.shape[1], device=input_values.device
            )
        else:
            lengths = attention_mask.sum(-1)
        logits, _ = self.pooled(input_values, lengths)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels.to(logits.device))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def whisper_config(base: WhisperConfig, **overrides) -> WhisperAudioConfig:
    """A loaded Whisper config (any Whisper model type) as this model's config."""
    values = base.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        values.pop(key, None)
    values.update(overrides)
    return WhisperAudioConfig(**values)


AutoConfig.register(MODEL_TYPE, WhisperAudioConfig, exist_ok=True)
AutoModelForAudioClassification.register(WhisperAudioConfig, WhisperAudioClassifier, exist_ok=True)
WhisperAudioConfig.register_for_auto_class()
WhisperAudioClassifier.register_for_auto_class("AutoModelForAudioClassification")
