"""Where each public corpus comes from: its official download, DOI, licence and citation.

Both real corpora allow non-commercial use only: a model trained on them carries that in its
model.json (``provenance``), and the server, the web page and the README say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.data.ravdess import CLIPS as RAVDESS_CLIPS
from training.data.tess import CLIPS as TESS_CLIPS

NON_COMMERCIAL = (
    "Both licences forbid commercial use: a model trained on these corpora is for "
    "non-commercial use; cite the corpora wherever it is described."
)


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    url: str  # the official download; not reachable from machines without internet
    archive: str  # the file name the download is stored under
    doi: str
    checksums: str  # what the publisher's record gives an md5 for: "archive" or "files"
    clips: int  # audio files in the extracted release
    licence: str
    citation: str


SOURCES = {
    "ravdess": Source(
        name="ravdess",
        title="RAVDESS, speech part (Ryerson Audio-Visual Database of Emotional Speech and Song)",
        url="https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip?download=1",
        archive="Audio_Speech_Actors_01-24.zip",
        doi="10.5281/zenodo.1188976",
        checksums="archive",
        clips=RAVDESS_CLIPS,
        licence="CC BY-NC-SA 4.0 (attribution, non-commercial, share-alike)",
        citation=(
            "Livingstone SR, Russo FA (2018). The Ryerson Audio-Visual Database of Emotional "
            "Speech and Song (RAVDESS). PLoS ONE 13(5): e0196391. Zenodo record 1188976, "
            "doi:10.5281/zenodo.1188976"
        ),
    ),
    "tess": Source(
        name="tess",
        title="TESS (Toronto Emotional Speech Set)",
        url=(
            "https://borealisdata.ca/api/access/dataset/:persistentId/"
            "?persistentId=doi:10.5683/SP2/E8H2MF"
        ),
        archive="TESS.zip",
        doi="10.5683/SP2/E8H2MF",
        checksums="files",
        clips=TESS_CLIPS,
        licence="CC BY-NC-ND 4.0 (attribution, non-commercial, no derivatives)",
        citation=(
            "Pichora-Fuller MK, Dupuis K (2020). Toronto emotional speech set (TESS). "
            "University of Toronto, Dataverse (Borealis), doi:10.5683/SP2/E8H2MF"
        ),
    ),
}


def provenance(names: list[str]) -> dict:
    """model.json's record of the training corpora among ``names`` (others, such as the
    synthetic corpus, are the project's own): each corpus's title, licence, DOI and citation,
    and ``usage``: "non-commercial" when any of their licences forbids commercial use."""
    corpora = [
        {
            "name": s.name,
            "title": s.title,
            "licence": s.licence,
            "doi": s.doi,
            "citation": s.citation,
        }
        for s in (SOURCES[n] for n in names if n in SOURCES)
    ]
    restricted = any("NC" in c["licence"].split(" (")[0] for c in corpora)
    return {"corpora": corpora, "usage": "non-commercial" if restricted else None}
