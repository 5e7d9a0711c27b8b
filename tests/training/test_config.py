import json

import pytest

from training.config import Config, ConfigError, load_config, parse_overrides, preset_names


def test_presets_load_and_differ():
    assert {"demo", "iemocap"} <= set(preset_names())
    demo, iemocap = load_config("demo"), load_config("iemocap")
    assert demo.dataset == "synthetic" and demo.ling_model == "minilm"
    assert iemocap.dataset == "iemocap" and iemocap.protocol == "loso"
    assert iemocap.ling_model == "bert-base-uncased"
    assert iemocap.student_model == "facebook/hubert-base-ls960"


def test_overrides_are_typed():
    cfg = load_config(
        "demo",
        overrides=[
            "--epochs=3",
            "--lr_encoder",
            "1e-4",
            "--ablation",
            "--seeds=4,5",
            "--cpu=false",
        ],
    )
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr_encoder == pytest.approx(1e-4)
    assert cfg.ablation is True and cfg.cpu is False
    assert cfg.seeds == [4, 5]


def test_dashes_map_to_underscores():
    assert parse_overrides(["--run-dir=x"]) == {"run_dir": "x"}


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--epochs=three", "epochs: expected an integer"),
        ("--epochs=2.5", "epochs: expected an integer"),
        ("--lr_heads=fast", "lr_heads: expected a number"),
        ("--ablation=maybe", "ablation: expected a boolean"),
        ("--seeds=0,x", "seeds: expected an integer"),
        ("--emb_loss=l1", "emb_loss: expected one of cosine, mse"),
        ("--variant=best", "variant: expected one of ce_only, ce\\+ling"),
        ("--variants=ce_only,fulll", "variants: expected names of ce_only"),
        ("--variants=", "variants: expected names of"),
    ],
)
def test_bad_types_are_errors(arg, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides=[arg])


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch'.*did you mean epochs"):
        load_config("demo", overrides=["--epoch=3"])


def test_missing_value_and_positional_are_errors():
    with pytest.raises(ConfigError, match="needs a value"):
        load_config("demo", overrides=["--epochs"])
    with pytest.raises(ConfigError, match="unexpected argument"):
        load_config("demo", overrides=["epochs=3"])


def test_preset_extends_another():
    base, whisper = load_config("iemocap"), load_config("iemocap-whisper")
    assert whisper.student_model == "openai/whisper-small" and whisper.dataset == "iemocap"
    assert whisper.ling_model == base.ling_model and whisper.protocol == base.protocol
    assert whisper.run_dir != base.run_dir


def test_presets_that_extend_in_a_loop_are_an_error(tmp_path, monkeypatch):
    from training import config

    (tmp_path / "a.toml").write_text('extends = "b"\n')
    (tmp_path / "b.toml").write_text('extends = "a"\n')
    monkeypatch.setattr(config, "PRESETS_DIR", tmp_path)
    with pytest.raises(ConfigError, match="loop: a -> b -> a"):
        load_config("a")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("nope")


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_config_file_then_overrides(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"epochs": 7, "temperature": 3, "labels": ["a", "b"]}))
    else:
        path.write_text('epochs = 7\ntemperature = 3\nlabels = ["a", "b"]\n')
    cfg = load_config("demo", str(path), ["--epochs=8"])
    assert cfg.epochs == 8  # the command line wins over the file
    assert cfg.temperature == 3.0 and isinstance(cfg.temperature, float)
    assert cfg.labels == ["a", "b"]


def test_config_file_type_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": "many"}))
    with pytest.raises(ConfigError, match="epochs"):
        load_config("demo", str(path))
    path.write_text(json.dumps({"epochs": True}))
    with pytest.raises(ConfigError, match="epochs"):
        load_config("demo", str(path))
    path.write_text(json.dumps({"nonsense": 1}))
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("demo", str(path))


def test_save_roundtrip(tmp_path):
    cfg = load_config("demo", overrides=["--epochs=4"])
    cfg.save(tmp_path / "config.json")
    again = load_config("demo", str(tmp_path / "config.json"))
    assert again == cfg
    assert again != Config()


def test_cli_reports_config_errors(capsys):
    from training.distill import main

    assert main(["--preset", "demo", "--epochs=x"]) == 2
    assert "epochs: expected an integer" in capsys.readouterr().err
