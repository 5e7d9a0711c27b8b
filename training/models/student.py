"""The speech-only student: a transformers audio encoder + masked mean pooling + classifier.

Two encoder families, both fed raw 16 kHz audio:

* raw-waveform encoders (HuBERT, wav2vec 2.0, WavLM, and the log-mel ``tiny-mel``): an
  ``AutoModelForAudioClassification``, so its weights save as a plain transformers checkpoint;
  per-utterance normalisation over the valid samples happens inside the model, and the first
  GroupNorm of group-norm feature encoders (hubert-base, wav2vec2-base) normalises over valid
  frames only, so an utterance's logits do not depend on its batch mates;
* Whisper encoders (training/models/whisper_encoder.py): Whisper's own log-mel front end in the
  graph, variable length, masked attention and pooling.

Pretrained students pool a learned softmax-weighted sum of all hidden layers by default
(``use_weighted_layer_sum``); one projection head per teacher is used only by the distillation
losses.

A student built with ``dimensions=True`` also has a regression head on the pooled embedding:
arousal, valence and dominance, a linear layer on a normalised scale (0 = the middle of
``DIMENSION_SCALE``, +-1 its ends) mapped back to the scale's units (1-5) in the forward, so the
exported ``dimensions`` output needs no post-processing. The head's presence is recorded in the
transformers config (``config.dimensions``) and its weights in ``dimensions.pt``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    HubertForSequenceClassification,
    PretrainedConfig,
)

from emocore.audio import MIN_SAMPLES
from training.data.utterance import DIMENSION_SCALE, DIMENSIONS
from training.models.mel_hubert import MelHubertForSequenceClassification
from training.models.whisper_encoder import (
    HOP_LENGTH,
    WhisperAudioClassifier,
    encoder_frames,
    whisper_config,
)

NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor's zero-mean unit-variance epsilon
DIMENSIONS_FILE = "dimensions.pt"  # the regression head's weights, beside the checkpoint

# Named from-scratch configurations (no download): for tests, the demo and benchmarks.
_TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    classifier_proj_size=64,
)
NAMED_CONFIGS: dict[str, dict] = {
    # group-norm feature encoder, like hubert-base-ls960 / wav2vec2-base
    "tiny": dict(_TINY, feat_extract_norm="group"),
    # layer-norm feature encoder, like the "large" / WavLM models
    "tiny-layer": dict(_TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    # The HuBERT-base architecture (94.4M parameters), randomly initialised: benchmarks.
    "hubert-base": dict(),
}
# The demo student: "tiny-layer" without HuBERT's time masking and layer drop, which kept the
# from-scratch model at chance for several epochs on the demo corpus.
NAMED_CONFIGS["tiny-demo"] = dict(NAMED_CONFIGS["tiny-layer"], mask_time_prob=0.0, layerdrop=0.0)
# The same transformer over a log-mel front end (training/models/mel_hubert.py): learns on a CPU in
# minutes. Its model class (and so its config class) is not plain HuBERT.
NAMED_CONFIGS["tiny-mel"] = dict(NAMED_CONFIGS["tiny-demo"])
# A Whisper encoder of Whisper tiny's shape but 2 small layers, randomly initialised: tests.
NAMED_CONFIGS["tiny-whisper"] = dict(
    d_model=64,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=128,
    decoder_layers=1,
    decoder_attention_heads=2,
    decoder_ffn_dim=64,
    vocab_size=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=3,
    max_source_positions=1500,
    classifier_proj_size=64,
)
NAMED_MODELS: dict[str, type[nn.Module]] = {
    "tiny-mel": MelHubertForSequenceClassification,
    "tiny-whisper": WhisperAudioClassifier,
}
WHISPER_MODEL_TYPES = ("whisper", WhisperAudioClassifier.config_class.model_type)


class MaskedGroupNormConvLayer(nn.Module):
    """A group-norm conv layer whose GroupNorm sees only each row's valid frames.

    Keeps the wrapped layer's parameter names (conv, layer_norm), so checkpoints stay
    loadable by transformers. ``lengths`` (valid input samples per row) is set by the
    student for the duration of one forward pass; without it the layer is the original.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.conv = layer.conv
        self.layer_norm = layer.layer_norm
        self.activation = layer.activation
        self.lengths: torch.Tensor | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv(hidden_states)
        if self.lengths is None:
            hidden_states = self.layer_norm(hidden_states)
        else:
            # Statistics in float32 whatever autocast chose for the convolution: bf16 holds
            # frame counts only to 3 significant digits (a 100k-frame utterance counts 99,840)
            # and a bf16 sum over ~1e5 frames loses the mean of an offset signal.
            dtype = hidden_states.dtype
            with torch.autocast(hidden_states.device.type, enabled=False):
                x = hidden_states.float()
                kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
                frames = torch.div(self.lengths - kernel, stride, rounding_mode="floor") + 1
                frames = frames.clamp(min=1).to(torch.float32)
                steps = torch.arange(x.shape[-1], device=x.device)
                mask = (steps[None, :] < frames[:, None]).to(torch.float32)[:, None, :]
                mean = (x * mask).sum(-1, keepdim=True) / frames[:, None, None]
                centred = (x - mean) * mask
                var = (centred * centred).sum(-1, keepdim=True) / frames[:, None, None]
                norm = self.layer_norm
                x = (x - mean) / torch.sqrt(var + norm.eps)
                x = x * norm.weight.float()[None, :, None] + norm.bias.float()[None, :, None]
            hidden_states = x.to(dtype)
        return self.activation(hidden_states)


def masked_normalise(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over each row's valid samples; padding stays zero."""
    steps = torch.arange(audio.shape[1], device=audio.device)
    mask = (steps[None, :] < lengths[:, None]).to(audio.dtype)
    count = lengths.clamp(min=1).to(audio.dtype)[:, None]
    mean = (audio * mask).sum(1, keepdim=True) / count
    centred = (audio - mean) * mask
    var = (centred * centred).sum(1, keepdim=True) / count
    return centred / torch.sqrt(var + NORM_EPS)


def is_pretrained(name_or_path: str) -> bool:
    """Anything but a named from-scratch config: a hub name, a local path or an offline bundle."""
    return name_or_path not in NAMED_CONFIGS


def build_classifier(
    name_or_path: str, labels: tuple[str, ...] | list[str], **overrides
) -> nn.Module:
    """A transformers audio classifier: a named from-scratch config, an offline Whisper bundle
    (``whisper-tiny.en``, ``whisper-base``), or a hub name / local path."""
    label_kw = dict(
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    if name_or_path in NAMED_CONFIGS:
        model_class = NAMED_MODELS.get(name_or_path, HubertForSequenceClassification)
        config = model_class.config_class(**NAMED_CONFIGS[name_or_path], **label_kw, **overrides)
        return model_class(config)
    from training.weights.bundles import resolve

    path = resolve(name_or_path)
    config: PretrainedConfig = AutoConfig.from_pretrained(path)
    if config.model_type in WHISPER_MODEL_TYPES:
        config = whisper_config(config, **label_kw, **overrides)
        return WhisperAudioClassifier.from_pretrained(path, config=config)
    config = AutoConfig.from_pretrained(path, **label_kw, **overrides)
    return AutoModelForAudioClassification.from_pretrained(path, config=config)


def dimension_spec() -> dict:
    """The model directory's ``dimensions`` entry: names in output order and the scale."""
    return {"names": list(DIMENSIONS), "scale": list(DIMENSION_SCALE)}


def to_scale(normalised: torch.Tensor, scale) -> torch.Tensor:
    """Normalised units (-1 .. 1 spans the scale) -> the scale's units (the inverse is
    ``training.fit.losses.normalised``)."""
    low, high = scale
    return (low + high) / 2 + (high - low) / 2 * normalised


class Student(nn.Module):
    """Raw 16 kHz audio [batch, samples] + valid lengths [batch] -> (logits, embedding), plus
    dimensions [batch, 3] in the scale's units when the student has the regression head."""

    def __init__(
        self,
        classifier: nn.Module,
        teacher_dims: dict[str, int] | None = None,
        dimensions: bool = False,
    ):
        super().__init__()
        self.classifier = classifier
        self.config = classifier.config
        if dimensions:
            self.config.dimensions = dimension_spec()
        spec = getattr(self.config, "dimensions", None)
        self.dimension_head = (
            nn.Linear(self.config.classifier_proj_size, len(spec["names"])) if spec else None
        )
        self.whisper = isinstance(classifier, WhisperAudioClassifier)
        if self.whisper:  # fixed sinusoids (the forward detaches them); out of the optimizer too
            classifier.encoder.embed_positions.requires_grad_(False)
        base = classifier.base_model
        self._masked_norm: MaskedGroupNormConvLayer | None = None
        if getattr(self.config, "feat_extract_norm", None) == "group":
            layers = base.feature_extractor.conv_layers
            if not isinstance(layers[0], MaskedGroupNormConvLayer):
                layers[0] = MaskedGroupNormConvLayer(layers[0])
            self._masked_norm = layers[0]
        self.projections = nn.ModuleDict(
            {
                name: nn.Linear(self.config.classifier_proj_size, dim)
                for name, dim in (teacher_dims or {}).items()
            }
        )

    @property
    def labels(self) -> list[str]:
        return [self.config.id2label[i] for i in range(self.config.num_labels)]

    @property
    def dimensions(self) -> dict | None:
        """{"names", "scale"} when the student predicts dimensional affect, else None."""
        return getattr(self.config, "dimensions", None) if self.dimension_head else None

    @property
    def embedding_dim(self) -> int:
        return self.config.classifier_proj_size

    @property
    def layer_weights(self) -> list[float] | None:
        """The learned share of each hidden layer (input embeddings first), when pooled so."""
        if not self.config.use_weighted_layer_sum:
            return None
        return torch.softmax(self.classifier.layer_weights.detach().float(), -1).tolist()

    @property
    def min_samples(self) -> int:
        """The shortest input (samples) for which every feature-encoder layer has an output frame."""
        if self.whisper:
            return MIN_SAMPLES
        need = 1
        for kernel, stride in reversed(
            list(zip(self.config.conv_kernel, self.config.conv_stride, strict=True))
        ):
            need = (need - 1) * stride + kernel
        return need

    @property
    def max_samples(self) -> int | None:
        """The longest input (samples): Whisper's position table covers 30 s; others any."""
        if not self.whisper:
            return None
        encoder = self.classifier.encoder
        return encoder.embed_positions.num_embeddings * encoder.conv2.stride[0] * HOP_LENGTH

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        if self.whisper:
            return encoder_frames(lengths)
        return self.classifier.base_model._get_feat_extract_output_lengths(lengths)

    def freeze_feature_encoder(self) -> None:
        """Freeze the front end: the CNN feature encoder, or Whisper's convolutions."""
        if self.whisper:
            encoder = self.classifier.encoder
            for module in (encoder.conv1, encoder.conv2):
                module.requires_grad_(False)
        else:
            self.classifier.freeze_feature_encoder()

    def freeze_layers(self, count: int) -> None:
        """Freeze the front end and the lowest ``count`` transformer layers (0 = none)."""
        if count <= 0:
            return
        layers = self.classifier.base_model.encoder.layers
        if count > len(layers):
            raise ValueError(f"cannot freeze {count} layers: the encoder has {len(layers)}")
        self.freeze_feature_encoder()
        for layer in layers[:count]:
            layer.requires_grad_(False)
        if not self.whisper:
            # Below the first layer: the projection and the convolutional position embedding.
            base = self.classifier.base_model
            base.feature_projection.requires_grad_(False)
            base.encoder.pos_conv_embed.requires_grad_(False)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, embedding = self.pooled(audio, lengths)
        if self.dimension_head is None:
            return logits, embedding
        normalised = self.dimension_head(embedding)
        return logits, embedding, to_scale(normalised, self.config.dimensions["scale"])

    def pooled(
        self, audio: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) of the classifier."""
        if self.whisper:
            return self.classifier.pooled(audio, lengths)
        audio = masked_normalise(audio, lengths)
        steps = torch.arange(audio.shape[1], device=audio.device)
        attention_mask = (steps[None, :] < lengths[:, None]).long()
        weighted = bool(self.config.use_weighted_layer_sum)
        if self._masked_norm is not None:
            self._masked_norm.lengths = lengths
        extra = {}
        if self.training and getattr(self.config, "mask_time_prob", 0) > 0:
            frames = int(self.frame_lengths(lengths.max()[None])[0])
            if frames <= self.config.mask_time_length:
                # transformers refuses to draw a mask span longer than the batch (a batch of
                # clips under ~0.2 s at hubert-base's 20 ms frames); such a batch is not masked.
                extra["mask_time_indices"] = torch.zeros(
                    len(audio), frames, dtype=torch.bool, device=audio.device
                )
        try:
            out = self.classifier.base_model(
                audio, attention_mask=attention_mask, output_hidden_states=weighted, **extra
            )
        finally:
            if self._masked_norm is not None:
                self._masked_norm.lengths = None
        if weighted:
            # As HubertForSequenceClassification does, so the hf/ checkpoint agrees.
            norm_weights = torch.softmax(self.classifier.layer_weights, dim=-1)
            hidden = (torch.stack(out.hidden_states, dim=1) * norm_weights.view(-1, 1, 1)).sum(1)
        else:
            hidden = out[0]
        hidden = self.classifier.projector(hidden)
        frames = self.frame_lengths(lengths).clamp(min=1)
        frame_steps = torch.arange(hidden.shape[1], device=hidden.device)
        frame_mask = (frame_steps[None, :] < frames[:, None]).to(hidden.dtype)[..., None]
        embedding = (hidden * frame_mask).sum(1) / frames[:, None].to(hidden.dtype)
        logits = self.classifier.classifier(embedding)
        return logits, embedding

    def project(self, embedding: torch.Tensor, teacher: str) -> torch.Tensor:
        return self.projections[teacher](embedding)


def save_student(student: Student, directory) -> None:
    """Save as a transformers checkpoint (+ projection heads, needed only to resume training,
    + the dimensions head when there is one)."""
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    student.classifier.save_pretrained(directory)
    torch.save(
        {
            "dims": {k: v.out_features for k, v in student.projections.items()},
            "state": student.projections.state_dict(),
        },
        directory / "projections.pt",
    )
    if student.dimension_head is not None:
        torch.save(student.dimension_head.state_dict(), directory / DIMENSIONS_FILE)


def load_student(directory) -> Student:
    from pathlib import Path

    directory = Path(directory)
    classifier = AutoModelForAudioClassification.from_pretrained(directory)
    heads = directory / "projections.pt"
    saved = torch.load(heads, weights_only=True) if heads.exists() else {"dims": {}, "state": {}}
    student = Student(classifier, saved["dims"])
    if saved["dims"]:
        student.projections.load_state_dict(saved["state"])
    if student.dimension_head is not None:
        state = torch.load(directory / DIMENSIONS_FILE, weights_only=True, map_location="cpu")
        student.dimension_head.load_state_dict(state)
    return student
