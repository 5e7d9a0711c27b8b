"""CTranslate2 Whisper bundles -> transformers checkpoints (training/weights/convert.py).

The weights are checked against CTranslate2 itself: the converted encoder computes what
ctranslate2's Whisper encoder computes on the same log-mel features, and transformers' greedy
decoding from those encoder states emits ctranslate2's tokens and transcribes real speech.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import ASTERISK_PACKAGE, real_speech_files
from tests.training.weights.installed import locate
from training.weights.convert import convert
from training.weights.ct2 import read_ct2

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Both sides compute in float32 from the same float16 weights, so they differ only in summation
# order. Measured: max 3e-5 (tiny.en, outputs up to ~13) and 3e-4 (base, outputs up to ~24),
# the same as transformers in float32 against itself in float64. A wrong weight moves them by
# far more (tiny.en: 4.0 for one dropped q bias, 16 for q and k swapped in one layer).
ENCODER_MAX_ABS = 1e-3
ENCODER_MEAN_ABS = 1e-5
# Measured 0.093 (4 errors in 43 words) for both tiny.en and base; a broken conversion emits
# garbage (WER ~1).
WER_BOUND = 0.2
# File names drop apostrophes.
SPELLING = {"oclock": "o'clock"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (CTranslate2 model folder, converted checkpoint); each converted once."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in done:
            bundle_dir, parts = locate(name)
            root = tmp_path_factory.mktemp(name)
            checkpoint = convert(bundle_dir, root / "checkpoint", model_bin=parts)
            ct2_dir = bundle_dir
            if parts != [bundle_dir / "model.bin"]:
                # ctranslate2 reads one model.bin beside config.json and the vocabulary.
                ct2_dir = root / "ct2"
                ct2_dir.mkdir()
                for file in ("config.json", "vocabulary.txt", "tokenizer.json"):
                    (ct2_dir / file).symlink_to(bundle_dir / file)
                with open(ct2_dir / "model.bin", "wb") as out:
                    for part in parts:
                        out.write(part.read_bytes())
            done[name] = ct2_dir, checkpoint
        return done[name]

    return get


def _features(checkpoint: Path, audios: list[np.ndarray]) -> np.ndarray:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(checkpoint)
    return extractor(audios, sampling_rate=16000, return_tensors="np").input_features


def _wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate over the whole set: word edit distance summed / reference words."""
    errors = words = 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = reference.split(), hypothesis.split()
        row = list(range(len(hyp) + 1))
        for i, ref_word in enumerate(ref, 1):
            diagonal, row[0] = row[0], i
            for j, hyp_word in enumerate(hyp, 1):
                substitution = diagonal + (ref_word != hyp_word)
                diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, substitution)
        errors += row[-1]
        words += len(ref)
    return errors / words


def test_wer_counts_substitutions_insertions_deletions():
    assert _wer(["a b c"], ["a b c"]) == 0
    assert _wer(["a b c", "d"], ["a x c", "d e"]) == 2 / 4
    assert _wer(["a b c d"], ["a d"]) == 2 / 4


# ---------------------------------------------------------------------------------------------
# the checkpoint


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("whisper-tiny.en", dict(d_model=384, layers=4, heads=6, vocab_size=51864)),
        ("whisper-base", dict(d_model=512, layers=6, heads=8, vocab_size=51865)),
    ],
)
def test_checkpoint_loads_offline(converted, name, dims):
    import torch
    from transformers import (
        AutoConfig,
        AutoProcessor,
        AutoTokenizer,
        GenerationConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    bundle_dir, checkpoint = converted(name)
    model, info = WhisperForConditionalGeneration.from_pretrained(
        checkpoint, output_loading_info=True
    )
    assert not any(info.values()), info
    assert model.dtype == torch.float32
    config = AutoConfig.from_pretrained(checkpoint)
    assert config.model_type == "whisper" and config.num_mel_bins == 80
    assert (config.d_model, config.vocab_size) == (dims["d_model"], dims["vocab_size"])
    assert config.encoder_layers == config.decoder_layers == dims["layers"]
    assert config.encoder_attention_heads == config.decoder_attention_heads == dims["heads"]
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    # Weights are the bundle's float16 values, widened.
    variables = read_ct2(locate(name)[1])
    fused = variables["decoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    value = model.model.decoder.layers[1].self_attn.v_proj.weight.detach().numpy()
    np.testing.assert_array_equal(value, np.split(fused, 3)[2])

    extractor = WhisperFeatureExtractor.from_pretrained(checkpoint)
    assert (extractor.feature_size, extractor.sampling_rate) == (80, 16000)
    assert type(AutoProcessor.from_pretrained(checkpoint)).__name__ == "WhisperProcessor"

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert len(tokenizer) == config.vocab_size
    ids = tokenizer("Hello world, this is a test.").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello world, this is a test."

    generation = GenerationConfig.from_pretrained(checkpoint)
    bundle_config = json.loads((bundle_dir / "config.json").read_text())
    assert generation.suppress_tokens == bundle_config["suppress_ids"]
    assert generation.begin_suppress_tokens == bundle_config["suppress_ids_begin"]
    assert generation.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert generation.decoder_start_token_id == tokenizer.convert_tokens_to_ids(
        "<|startoftranscript|>"
    )
    assert generation.no_timestamps_token_id == tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    first_timestamp = tokenizer.convert_tokens_to_ids("<|0.00|>")
    assert first_timestamp == generation.no_timestamps_token_id + 1
    assert generation.is_multilingual == (name == "whisper-base")
    if generation.is_multilingual:
        assert generation.lang_to_id["<|en|>"] == tokenizer.convert_tokens_to_ids("<|en|>")
        assert generation.task_to_id["transcribe"] == tokenizer.convert_tokens_to_ids(
            "<|transcribe|>"
        )

    assert checkpoint.stat().st_mode & 0o777 == 0o755
    assert {path.stat().st_mode & 0o777 for path in checkpoint.iterdir()} == {0o644}
    assert [path.name for path in checkpoint.parent.iterdir() if path.name.startswith(".")] == []


# ---------------------------------------------------------------------------------------------
# (a) the encoder against ctranslate2's


@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_encoder_matches_ctranslate2(converted, name):
    ctranslate2 = pytest.importorskip("ctranslate2")
    import torch
    from transformers import WhisperForConditionalGeneration

    ct2_dir, checkpoint = converted(name)
    rate, seconds = 16000, 5
    t = np.arange(rate * seconds) / rate
    noise = np.random.default_rng(0).standard_normal(t.size)
    audio = (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * noise).astype(np.float32)
    features = np.ascontiguousarray(_features(checkpoint, [audio]))
    assert features.shape == (1, 80, 3000)

    reference_model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    reference = np.array(reference_model.encode(ctranslate2.StorageView.from_array(features)))
    model = WhisperForConditionalGeneration.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        ours = model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()

    assert ours.shape == reference.shape == (1, 1500, model.config.d_model)
    diff = np.abs(ours - reference)
    print(
        f"{name}: encoder |transformers - ctranslate2| max {diff.max():.2e} mean "
        f"{diff.mean():.2e} (outputs up to {np.abs(reference).max():.1f})"
    )
    assert diff.max() < ENCODER_MAX_ABS
    assert diff.mean() < ENCODER_MEAN_ABS


# ---------------------------------------------------------------------------------------------
# (b) greedy transcription of real speech


def _asterisk_prompts() -> list[tuple[Path, str]]:
    """Every Asterisk prompt in digits/ whose file stem is one word: an integer (0-20, 30, ...
    90: the number spoken) or letters only (at, billion, ..., yesterday). The stem is the
    reference. Hyphenated stems (a-m, day-0, h-1, mon-0, ...) are abbreviations, left out."""
    files = real_speech_files(ASTERISK_PACKAGE)
    return [
        (path, SPELLING.get(path.stem, path.stem))
        for path in files
        if path.parent.name == "digits" and re.fullmatch(r"\d+|[a-z]+", path.stem)
    ]


def _check_transcription(converted, name: str, prompts: list[tuple[Path, str]]) -> None:
    ctranslate2 = pytest.importorskip("ctranslate2")
    import torch
    from transformers import AutoTokenizer, WhisperForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from emocore.audio import load_audio

    ct2_dir, checkpoint = converted(name)
    model = WhisperForConditionalGeneration.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    multilingual = model.generation_config.is_multilingual
    language = dict(language="en", task="transcribe") if multilingual else {}
    features = torch.from_numpy(_features(checkpoint, [load_audio(path) for path, _ in prompts]))

    # The encoder runs once; transformers and ctranslate2 both decode from its states (the
    # encoder itself is compared with ctranslate2's above).
    with torch.no_grad():
        states = torch.cat([model.model.encoder(chunk)[0] for chunk in features.split(8)])
        ids = model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            do_sample=False,
            num_beams=1,
            **language,
        )
        # The usual entry point, from features, decodes the same.
        first = model.generate(features[:1], do_sample=False, num_beams=1, **language)
    assert first[0].tolist() == ids[0, : first.shape[1]].tolist()

    # Whisper's evaluation normalizer (transformers' copy, without the British spelling table the
    # bundles lack): lower case, no punctuation, numbers as digits ("fifty", "50." -> "50").
    normalize = EnglishTextNormalizer({})
    hypotheses = [normalize(text) for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    references = [normalize(reference) for _, reference in prompts]
    wer = _wer(references, hypotheses)
    wrong = [
        f"{path.name}: {hyp!r}"
        for (path, _), ref, hyp in zip(prompts, references, hypotheses, strict=True)
        if ref != hyp
    ]
    words = sum(len(ref.split()) for ref in references)

    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
    if multilingual:
        prompt[1:1] = ["<|en|>", "<|transcribe|>"]
    reference_model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    results = reference_model.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(states.numpy())),
        [prompt] * len(prompts),
        beam_size=1,
    )
    ours = [[token for token in row if token < eot] for row in ids.tolist()]
    agree = sum(result.sequences_ids[0] == row for result, row in zip(results, ours, strict=True))

    print(
        f"{name}: WER {wer:.3f} over {len(prompts)} prompts ({words} words); "
        f"ctranslate2's greedy tokens agree on {agree}/{len(prompts)}; misheard: {wrong}"
    )
    assert wer < WER_BOUND
    # Identical here; the margin (1 in 20) is for a near-tie another BLAS could round otherwise.
    assert agree >= len(prompts) - len(prompts) // 20


def test_greedy_decoding_matches_ctranslate2_tiny(converted):
    """Every 3rd prompt (14 of 42, numbers and words): the encoder's 30 s window per prompt is
    the cost (~0.3 s each on 2 cores). All 42 prompts: the slow test below."""
    prompts = _asterisk_prompts()[2::3]
    assert len(prompts) >= 14
    _check_transcription(converted, "whisper-tiny.en", prompts)


@pytest.mark.slow  # 30-60 s on 2 cores: the encoder runs on 42 windows of 30 s
def test_greedy_transcribes_asterisk_prompts_tiny(converted):
    prompts = _asterisk_prompts()
    assert len(prompts) >= 20
    _check_transcription(converted, "whisper-tiny.en", prompts)


@pytest.mark.slow  # 1-2 min on 2 cores
def test_greedy_transcribes_asterisk_prompts_base(converted):
    prompts = _asterisk_prompts()
    assert len(prompts) >= 20
    _check_transcription(converted, "whisper-base", prompts)


def test_convert_leaves_nothing_when_it_fails(tmp_path):
    bundle_dir, parts = locate("whisper-tiny.en")
    broken = tmp_path / "bundle"
    broken.mkdir()
    for file in ("config.json", "vocabulary.txt", "tokenizer.json"):
        (broken / file).symlink_to(bundle_dir / file)
    with open(parts[0], "rb") as model_bin:
        (broken / "model.bin").write_bytes(model_bin.read(1 << 20))
    with pytest.raises(ValueError, match="truncated"):
        convert(broken, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FileExistsError):
        convert(bundle_dir, tmp_path / "taken", model_bin=parts)
