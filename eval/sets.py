"""Which question set plays which part: what each model and the calibration are fitted on, what is only reported.

The helper sets are `eval/datasets/helpers-<letter>` (written by helper agents from the report alone:
eval/datasets/HELPERS.md). Every command that fits something reads its defaults here, and refuses a reported set
(`refused_sets`), so a set's part is written once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from eval.datasets import Dataset, load_dataset

HELPERS_DIR = Path(__file__).resolve().parent / "datasets"

HELPER_SETS = "abcdefghijklmn"  # the query adapter's training sets (`python -m eval query-adapter`)
READER_HELPER_SETS = "abcdefghijkl"  # the reader's, with report dev and report-external (the Makefile's READER_HELPERS)
# the helper sets calibrate fits on beside report dev and report-external: ones the reader never saw, so that the
# served reader scores them as it scores new questions (the query adapter was trained on them)
CALIBRATION_HELPER_SETS = "mn"
HELD_OUT_HELPER_SETS = "opqrst"  # no model nor calibration is fitted on them: reported only

# sets that nothing is fitted on: reported only
HELD_OUT = {("report", "test"), ("report", "fresh"), ("report-external", "keywords"),
            *((f"helpers-{s}", "all") for s in HELD_OUT_HELPER_SETS)}
# the human-written sets the fusion and the calibration are tuned on (with CALIBRATION_HELPER_SETS for the
# calibration), which the query adapter must not train on; the adapter trains on helper sets, m and n included
TUNING = {("report", "dev"), ("report-external", "all"), ("report-external", "answerable"),
          ("report-external", "unanswerable")}


def helper_spec(letters: str, split: str | None = None) -> list[str]:
    """`dataset[:split]` specs (parse_sets) of the helper sets named by their letters."""
    return [f"{HELPERS_DIR / f'helpers-{s}'}" + (f":{split}" if split else "") for s in letters]


CALIBRATION_SETS = ",".join(["report:dev", "report-external:all", *helper_spec(CALIBRATION_HELPER_SETS, "all")])


def parse_sets(specs: str, external_dir: Path | None = None) -> list[Dataset]:
    """`dataset:split,…` (a split may be left out) as datasets."""
    pairs = [(s.strip().partition(":")[0], s.strip().partition(":")[2] or None) for s in specs.split(",") if s.strip()]
    return [load_dataset(name, split, external_dir) for name, split in pairs]


def refused_sets(datasets: list[Dataset], forbidden: set[tuple[str, str]], checksums: set[str] = frozenset()
                 ) -> list[str]:
    """The "name:split" of each of `datasets` a model must not be fitted on: one of `forbidden`, or one with a
    file whose sha256 is in `checksums` (a forbidden set's file under another name)."""
    return [f"{d.name}:{d.split}" for d in datasets if (d.name, d.split) in forbidden
            or (checksums and any(hashlib.sha256(p.read_bytes()).hexdigest() in checksums for p in d.files))]
