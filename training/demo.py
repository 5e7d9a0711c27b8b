"""``python -m training.demo --export DIR``: build the demo model, on real voices when it can.

The real-voices demo (preset ``voices``: RAVDESS and TESS with the synthetic words corpus) is
built when both corpora are found (``--corpora DIR``, ``$EMODISTILL_CORPORA`` or
``data/corpora``), or after ``--fetch`` downloaded them from their official sources (this needs
internet). Otherwise the synthetic demo (preset ``demo``) is built, and the reason and the way
to get the corpora are printed. Either way the first and the last line say which model it is.
Other arguments go to ``python -m training.distill`` as they are (e.g. ``--threads=1``).

    python -m training.demo --export models/demo
    python -m training.demo --export models/demo --fetch        # download the corpora first
    python -m training.demo --export models/demo --synthetic    # the synthetic demo regardless
"""

from __future__ import annotations

import argparse
import sys

from training import distill
from training.data import fetch
from training.data.corpora import CORPORA, DEFAULT_DIR, ENV_VAR, find_corpora
from training.data.sources import NON_COMMERCIAL

PRESETS = {"voices": "real voices (RAVDESS + TESS) and synthetic words", "demo": "synthetic speech"}


def choose(corpora_dir: str | None, want_fetch: bool, synthetic: bool) -> tuple[str, str]:
    """(preset, why): ``voices`` when every real corpus is found (after fetching it, if asked),
    else ``demo``."""
    if synthetic:
        return "demo", "--synthetic asked for the synthetic demo"
    found = find_corpora(CORPORA, corpora_dir)
    missing = [name for name, root in found.items() if root is None]
    if missing and want_fetch:
        print(f"downloading {', '.join(missing)} to {DEFAULT_DIR} (official sources)", flush=True)
        if fetch.main([*missing, "--to", str(DEFAULT_DIR)]) == 0:
            found = find_corpora(CORPORA, corpora_dir)
            missing = [name for name, root in found.items() if root is None]
    if missing:
        return "demo", (
            f"{', '.join(missing)} not found in --corpora, ${ENV_VAR} or {DEFAULT_DIR}. For the "
            f"real-voices demo: `python -m training.data.fetch ravdess tess --to {DEFAULT_DIR}` "
            f"(or `make corpora`; needs internet), or point {ENV_VAR} at extracted copies"
        )
    where = ", ".join(f"{name} in {root}" for name, root in found.items())
    return "voices", f"found {where}. {NON_COMMERCIAL}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, help="the model directory to write")
    parser.add_argument("--corpora", help=f"folder with ravdess/ and tess/ (else ${ENV_VAR})")
    parser.add_argument("--fetch", action="store_true", help="download missing corpora first")
    parser.add_argument("--synthetic", action="store_true", help="build the synthetic demo")
    parser.add_argument("--run-dir", help="the run directory (default: the preset's)")
    args, rest = parser.parse_known_args(argv)
    preset, why = choose(args.corpora, args.fetch, args.synthetic)
    print(f"demo model: {PRESETS[preset]} (preset {preset}): {why}", flush=True)
    command = ["--preset", preset, f"--export={args.export}"]
    if args.run_dir:
        command.append(f"--run_dir={args.run_dir}")
    if args.corpora and preset == "voices":
        command.append(f"--corpora_dir={args.corpora}")
    status = distill.main([*command, *rest])
    if status == 0:
        print(f"built the {PRESETS[preset]} demo model in {args.export} (preset {preset})")
    return status


if __name__ == "__main__":
    sys.exit(main())
