"""Get the real corpora from their official sources: download (progress bar, resumed after an
interruption, retried), verify, extract, and print each licence.

    python -m training.data.fetch ravdess tess --to data/corpora

Each corpus lands in ``<to>/<name>`` (what ``training.data.corpora.find_corpora`` finds); the
archive goes to ``<to>/downloads`` and is removed once its tree is verified
(``--keep-archives`` keeps it). A corpus already complete in ``<to>/<name>`` is not fetched
again. ``--corpora DIR`` or ``EMODISTILL_CORPORA=DIR`` points at corpora already extracted
(``DIR/ravdess``, ``DIR/tess``): those are used as they are and not downloaded.

Verification: the extracted tree must hold the release's clip count, every name must parse
(the adapters' own checks) and, where the publisher gives checksums, match them: Zenodo lists
an md5 for the RAVDESS archive and Dataverse one per TESS file; both are read from the
publisher's record at download time (through pooch), never stored here. A mirror (``--url``)
is checked by ``--hash`` where given, and always by count and names.

Built on pooch: its registry and hash checks, retries, and the Unzip processor; the
downloader keeps an interrupted download's bytes in ``<archive>.part`` and asks for the rest
with an HTTP Range request.
"""

from __future__ import annotations

import argparse
import os
import shutil
import zipfile
from pathlib import Path

import pooch

from training.data.corpora import DEFAULT_DIR, ENV_VAR, SCANS
from training.data.corpus import ACTED_LABELS, AUDIO_SUFFIXES, CorpusError
from training.data.sources import NON_COMMERCIAL, SOURCES, Source

# Bytes written per read: a dropped connection loses at most the chunk being read.
CHUNK_BYTES = 1 << 16


class FetchError(RuntimeError):
    """A corpus that could not be downloaded, extracted or verified."""


class ResumableDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that appends to ``part``
    and, when ``part`` already holds bytes, asks the server for the rest (HTTP Range); a
    server that ignores the range sends the whole file again, which replaces ``part``."""

    def __init__(self, part: Path, progressbar: bool = True, timeout: float = 60.0):
        self.part = part
        self.progressbar = progressbar
        self.timeout = timeout

    def __call__(self, url: str, output_file: str, pooch_instance, check_only: bool = False):
        import requests
        from tqdm.auto import tqdm

        if check_only:
            return requests.head(url, timeout=self.timeout, allow_redirects=True).ok
        have = self.part.stat().st_size if self.part.exists() else 0
        # identity: the bytes counted are the file's (a compressed transfer would not add up)
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            if response.status_code == 416:  # nothing after `have`: complete, or longer
                total = response.headers.get("Content-Range", "").rpartition("/")[2]
                if total != str(have):
                    self.part.unlink()
                    raise ValueError(f"{self.part.name}: kept bytes do not fit; starting anew")
            else:
                response.raise_for_status()
                if response.status_code != 206:
                    have = 0
                size = int(response.headers.get("Content-Length", 0))
                total = have + size if size else None
                with (
                    self.part.open("ab" if have else "wb") as out,
                    tqdm(
                        total=total, initial=have, unit="B", unit_scale=True,
                        desc=self.part.name.removesuffix(".part"), disable=not self.progressbar,
                    ) as bar,
                ):  # fmt: skip
                    for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                        out.write(chunk)
                        bar.update(len(chunk))
                if total is not None and self.part.stat().st_size != total:
                    raise ValueError(
                        f"{self.part.name}: {self.part.stat().st_size} of {total} bytes"
                    )
        shutil.move(self.part, output_file)


def publisher_checksums(source: Source) -> dict[str, str]:
    """``{file name: "md5:..."}`` from the publisher's record of ``source.doi`` (needs the
    internet: doi.org and Zenodo or Dataverse)."""
    record = pooch.create(path=pooch.os_cache("emodistill"), base_url=f"doi:{source.doi}/")
    record.load_registry_from_doi()
    return dict(record.registry)


def verify_tree(
    source: Source, root: Path, file_hashes: dict[str, str] | None = None, clips: bool = True
) -> tuple[int, list[str]]:
    """(audio files read, problems): every name must parse; with ``clips`` the release's
    count must be there; with ``file_hashes`` each file must match its publisher checksum."""
    try:
        utterances, problems = SCANS[source.name](root, ACTED_LABELS)
    except CorpusError as exc:
        return 0, exc.problems
    if clips and len(utterances) != source.clips:
        problems.append(f"{len(utterances)} clips, the release has {source.clips}")
    audio = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    for path in audio if file_hashes is not None else []:
        expected = file_hashes.get(path.name)
        alg, _, digest = (expected or "").partition(":")
        if expected is None:
            problems.append(f"{path}: not in the publisher's file list")
        elif pooch.file_hash(str(path), alg=alg) != digest:
            problems.append(f"{path}: {alg} differs from the publisher's")
    return len(utterances), problems


def fetch_corpus(
    source: Source,
    to: str | Path,
    *,
    url: str | None = None,
    known_hash: str | None = None,
    file_hashes: dict[str, str] | None = None,
    progress: bool = True,
    keep_archive: bool = False,
    retries: int = 2,
) -> Path:
    """Download ``source`` (or the mirror ``url``), check it against ``known_hash``
    ("md5:..." / "sha256:..."), extract and verify it (``file_hashes``: per file), and move it
    to ``<to>/<name>``; returns that folder. Raises ``FetchError`` saying what went wrong."""
    to = Path(to)
    target = to / source.name
    if target.exists():
        count, problems = verify_tree(source, target, file_hashes)
        if not problems:
            return target
        raise FetchError(
            f"{target} exists but is not the complete release ({count} clips; "
            f"{'; '.join(problems[:3])}): move it away, or use it as it is with --corpora"
        )
    downloads = to / "downloads"
    archive = downloads / source.archive
    part = downloads / f"{source.archive}.part"
    partial = to / f".{source.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    registry = pooch.create(
        path=downloads,
        base_url="",
        registry={source.archive: known_hash},
        urls={source.archive: url or source.url},
        retry_if_failed=retries,
    )
    try:
        registry.fetch(
            source.archive,
            processor=pooch.Unzip(extract_dir=str(partial.resolve())),
            downloader=ResumableDownloader(part, progressbar=progress),
        )
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise FetchError(f"{archive} is not a valid zip archive ({exc}): removed") from exc
    except (ValueError, OSError) as exc:  # a hash mismatch (pooch), an HTTP or socket error
        kept = part.stat().st_size if part.exists() else 0
        raise FetchError(
            f"{source.name}: download failed after {retries + 1} attempt(s): {exc}"
            + (f"; {kept} bytes are kept in {part}: run again to resume" if kept else "")
        ) from exc
    count, problems = verify_tree(source, partial, file_hashes)
    if problems:
        shutil.rmtree(partial, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise CorpusError(source.name, archive, problems)
    partial.rename(target)
    if not keep_archive:
        archive.unlink()
    return target


def licence_note(source: Source) -> str:
    return (
        f"{source.title}\n  licence: {source.licence}\n  cite: {source.citation}\n"
        f"  source: https://doi.org/{source.doi}"
    )


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in items if "=" in item)
    bad = [i for i in items if "=" not in i] + [n for n in pairs if n not in SOURCES]
    if bad:
        raise SystemExit(f"{what} takes NAME=VALUE with NAME one of {list(SOURCES)}: {bad}")
    return pairs


def publisher_hashes(source: Source, url: str | None, known_hash: str | None) -> dict:
    """``fetch_corpus``'s url, known_hash and file_hashes: the publisher's checksums for the
    official URL (unless ``known_hash`` is given), none for a mirror."""
    out = {"url": url, "known_hash": known_hash, "file_hashes": None}
    if url or known_hash:
        return out
    try:
        checksums = publisher_checksums(source)
    except Exception as exc:  # noqa: BLE001 - any failure falls back to count and names
        print(f"{source.name}: no checksums from the publisher ({exc}); checking count and names")
        return out
    if source.checksums == "archive":
        out["known_hash"] = checksums.get(source.archive)
    else:
        out["file_hashes"] = checksums
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="+", choices=list(SOURCES), metavar="corpus", help=" or ".join(SOURCES)
    )
    parser.add_argument("--to", type=Path, default=DEFAULT_DIR, help="where corpora land")
    parser.add_argument("--corpora", type=Path, help=f"already extracted corpora ({ENV_VAR})")
    parser.add_argument("--url", action="append", default=[], help="NAME=URL of a mirror")
    parser.add_argument("--hash", action="append", default=[], help="NAME=ALG:HEX to check")
    parser.add_argument("--keep-archives", action="store_true")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    urls, hashes = _pairs(args.url, "--url"), _pairs(args.hash, "--hash")
    given = args.corpora or os.environ.get(ENV_VAR)
    failed = 0
    for name in args.names:
        source = SOURCES[name]
        try:
            if given and (Path(given) / name).is_dir():
                root = Path(given) / name
                count, problems = verify_tree(source, root, clips=False)
                if problems:
                    raise CorpusError(name, root, problems)
                print(f"{name}: using {root} as it is ({count} clips), not downloading")
            else:
                root = fetch_corpus(
                    source,
                    args.to,
                    **publisher_hashes(source, urls.get(name), hashes.get(name)),
                    progress=not args.no_progress,
                    keep_archive=args.keep_archives,
                    retries=args.retries,
                )
                print(f"{name}: {root}")
        except (FetchError, CorpusError) as exc:
            print(f"{name}: FAILED: {exc}")
            failed += 1
        print(licence_note(source))
    print(NON_COMMERCIAL)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
