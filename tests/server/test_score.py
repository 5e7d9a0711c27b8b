"""python -m server.score predict: local model dir and --url, folders, JSONL/CSV, error rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from emocore.audio import load_audio
from server.score import audio_files, main
from tests.fixtures import encode_clip, write_clip
from tests.server.conftest import softmax
from tests.server.live_server import serve
from tests.server.speech_clips import three_utterances

LABELS = ["neutral", "happy", "angry", "sad"]


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    (folder / "nested").mkdir(parents=True)
    write_clip(folder / "a.wav", seconds=1.0, kind="noise")
    write_clip(
        folder / "nested" / "b.flac",
        fmt="flac",
        sr=44100,
        channels=2,
        seconds=1.5,
        kind="noise",
        seed=1,
    )
    (folder / "broken.mp3").write_bytes(b"junk" * 20)
    (folder / "notes.txt").write_text("not audio")
    return folder


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folders_are_walked_for_audio(clips):
    assert [p.name for p in audio_files([clips])] == ["a.wav", "broken.mp3", "b.flac"]
    with pytest.raises(FileNotFoundError):
        audio_files([clips / "missing.wav"])


def test_local_jsonl_equals_direct_onnx(clips, tiny_model_dir, reference, tmp_path):
    out = tmp_path / "results.jsonl"
    status = main(
        [
            "predict",
            str(clips),
            "--model-dir",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert status == 1  # broken.mp3 failed, the others were scored
    rows = {row["path"].rsplit("/", 1)[1]: row for row in read_jsonl(out)}
    assert rows["broken.mp3"]["error"]["code"] == "undecodable"
    for name in ("a.wav", "nested/b.flac"):
        path = clips / name
        expected = softmax(reference(load_audio(path))[0])
        row = rows[path.name]
        np.testing.assert_allclose(
            [row["probabilities"][label] for label in LABELS], expected, atol=1e-5
        )
        assert row["label"] == LABELS[int(expected.argmax())]


def test_local_csv_with_segments(tiny_model_dir, tmp_path):
    long_file = tmp_path / "three.wav"
    long_file.write_bytes(encode_clip("wav", "FLOAT", data=three_utterances().samples))
    out = tmp_path / "results.csv"
    args = [
        "predict",
        str(long_file),
        "--model-dir",
        str(tiny_model_dir),
        "--segment",
        "--out",
        str(out),
    ]
    assert main([*args, "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3
    assert all(
        row["label"] in LABELS and float(row["end_s"]) > float(row["start_s"]) for row in rows
    )
    assert {f"p_{label}" for label in LABELS} <= set(rows[0])


def test_missing_model_dir_is_an_error(clips, tmp_path, capsys):
    assert (
        main(["predict", str(clips), "--model-dir", str(tmp_path / "nope"), "--no-progress"]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_url_mode_matches_local(clips, tiny_model_dir, tmp_path):
    local, remote = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    main(
        [
            "predict",
            str(clips),
            "--model-dir",
            str(tiny_model_dir),
            "--out",
            str(local),
            "--no-progress",
        ]
    )
    with serve(tiny_model_dir, api_keys="k1") as (_, url):
        args = ["predict", str(clips), "--url", url, "--out", str(remote), "--no-progress"]
        assert main([*args, "--api-key", "k1"]) == 1
        with_key = read_jsonl(remote)
        assert main(args) == 1
        without_key = read_jsonl(remote)
    assert {row["error"]["code"] for row in without_key} == {"unauthorized"}
    for a, b in zip(read_jsonl(local), with_key, strict=True):
        assert a["path"] == b["path"]
        if "error" in a:
            assert a["error"]["code"] == b["error"]["code"]
        else:
            assert a["label"] == b["label"]
            np.testing.assert_allclose(
                list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-5
            )
