"""Results-table views of transcribe.json: Whisper's word error rates, its engines, and the
teachers and students trained on its transcripts."""

from __future__ import annotations

from benchmarks.tables_format import num, pct, table
from benchmarks.tables_voices import _ran


def _wer(wer: dict) -> str:
    return f"{pct(wer['plain'])} / {pct(wer['whisper'])}"


def _short(model: str) -> str:
    return model.removeprefix("whisper-")


def transcribe_wer(report: dict) -> list[str]:
    data = report["asr"]
    models = list(data["wer"])
    header = ["corpus", "clips (of)", "audio min"]
    header += [f"{_short(m)} WER %" for m in models]
    header += [f"{_short(m)} s / audio min" for m in models]
    rows = []
    for corpus, sample in data["samples"].items():
        measured = [data["wer"][m][corpus] for m in models]
        rows.append([
            corpus, f"{sample['clips']} ({sample['of']})", num(sample["audio_minutes"]),
            *[_wer(r["wer"]) for r in measured],
            *[num(r["seconds_per_audio_minute"]) for r in measured],
        ])  # fmt: skip
    engines = ", ".join(f"{_short(m)}: {data['chosen'][m]}" for m in models)
    lines = [
        *table(header, rows),
        "",
        f"WER in % over each sample's words, two normalisations of both sides: plain (lower "
        f"case, punctuation removed) / Whisper's English normaliser (numbers as digits, "
        f"spellings unified) first. Clips per corpus spread evenly over its clip lengths; "
        f"engine ({engines}), {data['threads']} threads, batches of {data['batch_size']}. "
        f"Seconds per audio minute: transcription only (the model loaded first), on this "
        f"shared machine.",
    ]
    distill = report.get("distill")
    if distill:
        every = distill["transcript_wer"]
        lines += [
            "",
            f"All {every['clips']} demo utterances, transcribed by the training run with "
            f"`--transcribe=all`, with {distill['stage']['whisper']}: WER {_wer(every)}; its "
            f"{distill['transcript_wer_test']['clips']} test utterances: "
            f"{_wer(distill['transcript_wer_test'])}.",
        ]
    examples = [
        f'{corpus}: "{row["misheard"][0]["said"]}" heard as "{row["misheard"][0]["heard"]}"'
        for corpus, row in data["wer"][models[0]].items()
        if row["misheard"]
    ]
    if examples:
        lines += ["", f"Misheard by {_short(models[0])}, e.g. " + "; ".join(examples) + "."]
    return [*lines, "", _ran(data)]


def transcribe_engines(report: dict) -> list[str]:
    data = report["asr"]
    rows = []
    for model, engines in data["engines"].items():
        for row in engines:
            chosen = " (chosen)" if data["chosen"][model] == row["engine"] else ""
            rows.append([
                _short(model), row["engine"] + chosen, _wer(row["wer"]),
                num(row["seconds_per_audio_minute"]), f"{row['same_text']} / {row['clips']}",
                num(row["load_seconds"]),
            ])  # fmt: skip
    first = next(iter(data["engines"].values()))[0]
    return [
        *table(
            [
                "model",
                "engine",
                "WER % (plain / Whisper)",
                "s / audio min",
                "same text as CTranslate2 float32",
                "load s",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"The same {first['clips']} clips ({first['audio_minutes']:.1f} min; the first of each "
        f"corpus's sample) for every engine, greedy decoding, {data['threads']} threads; "
        f"chosen: the fastest whose WER is within {pct(data['equal_wer'])} point of CTranslate2 "
        f"float32's. faster-whisper transcribes one clip per call (its batched pipeline cuts "
        f"one long recording); the others take batches of {data['batch_size']}.",
        "",
        _ran(data),
    ]


def _ms(values: dict) -> str:
    return f"{values['mean'] * 100:.1f} ± {values['std'] * 100:.1f}"


def transcribe_distill(report: dict) -> list[str]:
    distill = report["distill"]
    rows = []
    for key in ("given", "asr"):
        run = distill[key]
        source = ", ".join(f"{n} {s}" for s, n in run["transcripts"].items()) or "given"
        rows.append([
            source, _ms(run["ling_teacher"]["test_ua"]), _ms(run["ling_teacher"]["valid_ua"]),
            _ms(run["student_test_best"]), _ms(run["student_test_last"]),
            _ms(run["student_valid_best"]), _ms(run["words_only_best"]),
        ])  # fmt: skip
    given, asr = distill["given"], distill["asr"]

    def gap(*keys: str) -> str:
        a, g = asr, given
        for key in keys:
            a, g = a[key], g[key]
        return f"{(a['mean'] - g['mean']) * 100:+.1f}"

    rows.append([
        "Whisper - given (points)", gap("ling_teacher", "test_ua"), gap("ling_teacher", "valid_ua"),
        gap("student_test_best"), gap("student_test_last"), gap("student_valid_best"),
        gap("words_only_best"),
    ])  # fmt: skip
    stage = distill["stage"]
    return [
        *table(
            [
                "transcripts",
                "text teacher test UA",
                "text teacher valid UA",
                f"student {given['variant']} test UA, best valid",
                "last epoch",
                "valid UA (best)",
                "words-only test UA (best)",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"UA in %, mean ± std: the text teacher over seeds "
        f"{', '.join(map(str, given['ling_teacher']['seeds']))}, the student over seeds "
        f"{', '.join(map(str, given['seeds']))}; the demo fold (120 test and 120 validation "
        f"utterances, 29 of the test ones carry their label by the words only). Both runs share "
        f"the prosodic teacher (test UA {pct(given['pros_teacher_test_ua'])}). The run with "
        f"Whisper's transcripts transcribed {stage['transcribed']} utterances "
        f"({num(stage['audio_minutes'])} min of audio) in {num(stage['seconds'] / 60)} min, "
        f"{num(stage['seconds_per_audio_minute'])} s per audio minute, with "
        f"{stage['whisper']}, beside other jobs; it took "
        f"{num(asr['seconds'] / 60)} min in all, the run on the given texts "
        f"{num(given['seconds'] / 60)}.",
        "",
        _ran(distill),
    ]
