"""The corpora's provenance record that model.json carries."""

from training.data.corpora import corpus_names
from training.data.sources import SOURCES, provenance


def test_real_corpora_make_a_model_non_commercial():
    record = provenance(["ravdess", "synthetic"])
    assert [c["name"] for c in record["corpora"]] == ["ravdess"]
    assert record["corpora"][0]["doi"] == SOURCES["ravdess"].doi
    assert record["usage"] == "non-commercial"


def test_the_synthetic_corpus_alone_carries_no_restriction():
    assert provenance(["synthetic"]) == {"corpora": [], "usage": None}
    assert provenance([]) == {"corpora": [], "usage": None}


def test_corpus_names_of_each_dataset_kind():
    assert corpus_names("corpora", "ravdess,tess=/data/TESS,synthetic=data/s") == [
        "ravdess",
        "tess",
        "synthetic",
    ]
    assert corpus_names("tess", "") == ["tess"]
    assert corpus_names("manifest", "m.csv") == []
    assert corpus_names("iemocap", "/data/IEMOCAP") == []
