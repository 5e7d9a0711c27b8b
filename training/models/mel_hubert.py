"""HuBERT with a log-mel front end: the from-scratch student for CPU training.

A raw-waveform convolutional feature encoder has to learn a filterbank from data, which a
small model trained from scratch for a few CPU epochs does poorly (docs/training.md). This
model keeps HuBERT's transformer, pooling and classifier and replaces the seven learned
convolutions by a fixed log-mel filterbank (25 ms Hann window, 10 ms hop, computed in the graph
as a convolution with a windowed DFT basis) and one learned convolution. It still takes raw
16 kHz audio, so the ONNX contract and the server are unchanged.

The config encodes the front end in ``conv_kernel``/``conv_stride`` ((n_fft, k), (hop, s)), so
HuBERT's own output-length arithmetic, attention masks and pooling stay correct. The file only
imports torch and transformers: ``save_pretrained`` copies it next to the weights (``auto_map``),
so ``AutoModelForAudioClassification.from_pretrained(dir, trust_remote_code=True)`` loads a
saved student without this package.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    HubertConfig,
    HubertForSequenceClassification,
)
from transformers.activations import ACT2FN

MODEL_TYPE = "emodistill_mel_hubert"
LOG_FLOOR = 1e-6  # added to the mel power before the log (the input has unit variance)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, fmin: float, fmax: float
) -> torch.Tensor:
    """HTK-style triangular mel filters, [n_mels, n_fft // 2 + 1]."""

    def to_mel(hz):
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    mels = torch.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def dft_basis(n_fft: int) -> torch.Tensor:
    """Hann-windowed real DFT as conv1d weights: [2 * (n_fft // 2 + 1), 1, n_fft] (cos, then sin)."""
    t = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * k[:, None] * t[None] / n_fft
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    basis = torch.cat([torch.cos(angle), torch.sin(angle)]) * window[None]
    return basis[:, None, :].float()


class MelHubertConfig(HubertConfig):
    model_type = MODEL_TYPE

    def __init__(
        self,
        n_mels: int = 64,
        n_fft: int = 400,
        hop_length: int = 160,
        mel_fmin: float = 20.0,
        mel_fmax: float = 8000.0,
        mel_channels: int = 64,
        mel_kernel: int = 3,
        mel_stride: int = 2,
        sampling_rate: int = 16_000,
        **kwargs,
    ):
        # The front end, expressed the way HuBERT computes frame counts from its conv layers.
        kwargs["conv_dim"] = (n_mels, mel_channels)
        kwargs["conv_kernel"] = (n_fft, mel_kernel)
        kwargs["conv_stride"] = (hop_length, mel_stride)
        kwargs.setdefault("feat_extract_norm", "layer")
        super().__init__(**kwargs)
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.mel_fmin = mel_fmin
        self.mel_fmax = mel_fmax
        self.mel_channels = mel_channels
        self.mel_kernel = mel_kernel
        self.mel_stride = mel_stride
        self.sampling_rate = sampling_rate


class LogMelFeatureEncoder(nn.Module):
    """[batch, samples] -> log-mel [batch, n_mels, frames] -> conv + LayerNorm + act [batch, C, frames']."""

    def __init__(self, config: MelHubertConfig):
        super().__init__()
        self.hop_length = config.hop_length
        # Buffers, not parameters: saved with the weights (so loading never recomputes them on
        # another device or dtype) and never trained.
        self.register_buffer("dft", dft_basis(config.n_fft))
        self.register_buffer(
            "mel",
            mel_filterbank(
                config.n_mels, config.n_fft, config.sampling_rate, config.mel_fmin, config.mel_fmax
            ),
        )
        self.conv = nn.Conv1d(
            config.n_mels,
            config.mel_channels,
            kernel_size=config.mel_kernel,
            stride=config.mel_stride,
            bias=config.conv_bias,
        )
        self.layer_norm = nn.LayerNorm(config.mel_channels, eps=config.layer_norm_eps)
        self.activation = ACT2FN[config.feat_extract_activation]

    def _freeze_parameters(self) -> None:
        """What HuBERT's freeze_feature_encoder() calls."""
        for param in self.parameters():
            param.requires_grad = False

    def log_mel(self, input_values: torch.Tensor) -> torch.Tensor:
        # Always float32: under bf16 autocast the power spectrum would lose the low bands.
        with torch.autocast(device_type=input_values.device.type, enabled=False):
            audio = input_values.float()[:, None, :]
            spectrum = nn.functional.conv1d(audio, self.dft.float(), stride=self.hop_length)
            real, imag = spectrum.chunk(2, dim=1)
            power = real * real + imag * imag
            return torch.log(torch.matmul(self.mel.float(), power) + LOG_FLOOR)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden = self.conv(self.log_mel(input_values))
        hidden = self.layer_norm(hidden.transpose(1, 2)).transpose(1, 2)
        return self.activation(hidden)


class MelHubertForSequenceClassification(HubertForSequenceClassification):
    config_class = MelHubertConfig

    def __init__(self, config: MelHubertConfig):
        super().__init__(config)
        self.hubert.feature_extractor = LogMelFeatureEncoder(config)
        self.post_init()


AutoConfig.register(MODEL_TYPE, MelHubertConfig, exist_ok=True)
AutoModelForAudioClassification.register(
    MelHubertConfig, MelHubertForSequenceClassification, exist_ok=True
)
MelHubertConfig.register_for_auto_class()
MelHubertForSequenceClassification.register_for_auto_class("AutoModelForAudioClassification")
