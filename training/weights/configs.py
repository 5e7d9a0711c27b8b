"""The text files of a converted checkpoint: transformers' config, generation, preprocessor and
tokenizer files, from a bundle's config.json, tokenizer.json and vocabulary.txt."""

from __future__ import annotations

import json
from pathlib import Path

from training.models.whisper_encoder import HOP_LENGTH, N_FFT, SAMPLE_RATE
from training.weights.ct2 import Dims

CHUNK_SECONDS = 30


def _vocabulary(bundle_dir: Path) -> list[str]:
    if (bundle_dir / "vocabulary.json").is_file():
        return json.loads((bundle_dir / "vocabulary.json").read_text(encoding="utf-8"))
    text = (bundle_dir / "vocabulary.txt").read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def complete_tokenizer(bundle_dir: Path, vocab_size: int) -> dict:
    """The bundle's tokenizer.json, completed to the model's vocabulary.

    It stops at <|notimestamps|>; the model's last 1501 rows are the timestamp tokens
    <|0.00|> ... <|30.00|>, listed in vocabulary.txt. They are added as non-special tokens, as in
    the hub's Whisper tokenizers: WhisperTokenizer takes the id after its last special token as
    the first timestamp."""
    tokenizer = json.loads((bundle_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary = _vocabulary(bundle_dir)
    if len(vocabulary) != vocab_size:
        raise ValueError(
            f"{bundle_dir}: the vocabulary has {len(vocabulary)} tokens, the model {vocab_size}"
        )
    known = dict(tokenizer["model"]["vocab"])
    known.update({added["content"]: added["id"] for added in tokenizer["added_tokens"]})
    for token, index in known.items():
        if vocabulary[index] != token:
            raise ValueError(
                f"{bundle_dir}: tokenizer.json and the vocabulary disagree at id {index} "
                f"({token!r} vs {vocabulary[index]!r})"
            )
    template = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    for index in range(max(known.values()) + 1, vocab_size):
        tokenizer["added_tokens"].append(
            {"id": index, "content": vocabulary[index], **template, "special": False}
        )
    return tokenizer


def _token_ids(tokenizer: dict) -> dict[str, int]:
    return {added["content"]: added["id"] for added in tokenizer["added_tokens"]}


def checkpoint_configs(
    dims: Dims, tied: bool, bundle_config: dict, tokenizer: dict
) -> dict[str, dict]:
    """config.json, generation_config.json, preprocessor_config.json, tokenizer_config.json and
    special_tokens_map.json, with the keys of the hub's openai/whisper-* checkpoints."""
    ids = _token_ids(tokenizer)
    eot = ids["<|endoftext|>"]
    sot = ids["<|startoftranscript|>"]
    # openai-whisper's rule: only the multilingual models have the extra language token.
    multilingual = dims.vocab_size >= 51865
    model = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": dims.vocab_size,
        "num_mel_bins": dims.n_mels,
        "d_model": dims.d_model,
        "encoder_layers": dims.encoder_layers,
        "encoder_attention_heads": dims.encoder_heads,
        "encoder_ffn_dim": dims.encoder_ffn,
        "decoder_layers": dims.decoder_layers,
        "decoder_attention_heads": dims.decoder_heads,
        "decoder_ffn_dim": dims.decoder_ffn,
        "num_hidden_layers": dims.encoder_layers,
        "max_source_positions": dims.max_source_positions,
        "max_target_positions": dims.max_target_positions,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": tied,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "use_cache": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "torch_dtype": "float32",
    }
    generation = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": dims.max_target_positions,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "max_initial_timestamp_index": 50,
        "return_timestamps": False,
        "is_multilingual": multilingual,
        "suppress_tokens": list(bundle_config.get("suppress_ids", [])),
        "begin_suppress_tokens": list(bundle_config.get("suppress_ids_begin", [220, eot])),
    }
    if "alignment_heads" in bundle_config:
        generation["alignment_heads"] = [list(pair) for pair in bundle_config["alignment_heads"]]
    if multilingual:
        names = {index: token for token, index in ids.items()}
        generation["lang_to_id"] = {names[i]: i for i in bundle_config["lang_ids"]}
        generation["task_to_id"] = {
            "transcribe": ids["<|transcribe|>"],
            "translate": ids["<|translate|>"],
        }
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "WhisperProcessor",
        "feature_size": dims.n_mels,
        "sampling_rate": SAMPLE_RATE,
        "n_fft": N_FFT,
        "hop_length": HOP_LENGTH,
        "chunk_length": CHUNK_SECONDS,
        "n_samples": CHUNK_SECONDS * SAMPLE_RATE,
        "nb_max_frames": CHUNK_SECONDS * SAMPLE_RATE // HOP_LENGTH,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
    }
    special = sorted(
        (added for added in tokenizer["added_tokens"] if added["special"]), key=lambda a: a["id"]
    )
    extra = [added["content"] for added in special if added["id"] != eot]
    tokens = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    tokens |= {"unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer",
        "processor_class": "WhisperProcessor",
        **tokens,
        "additional_special_tokens": extra,
        "add_prefix_space": False,
        "errors": "replace",
        "model_max_length": dims.max_target_positions,
        "clean_up_tokenization_spaces": False,
        "return_attention_mask": False,
    }
    return {
        "config.json": model,
        "generation_config.json": generation,
        "preprocessor_config.json": preprocessor,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": {**tokens, "additional_special_tokens": extra},
    }


def bpe_files(tokenizer: dict) -> dict[str, str]:
    """vocab.json and merges.txt, for the Python (non-Rust) WhisperTokenizer of transformers 4."""
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    return {
        "vocab.json": json.dumps(tokenizer["model"]["vocab"], ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
    }
