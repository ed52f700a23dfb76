"""/v1/ask: an extractive answer, calibrated abstention and token-exact context packing.

No generation model: the answer is the sentence (or a sentence and the list it introduces) of the top
passages that best answers the question. Whether to answer at all is decided by a small logistic model over
the registered features (one of them a reader's score of the answer sentence), fitted by
`python -m eval calibrate`.

    question.py     what a question asks: answer kind, counted noun, attribute, names, numbers
    evidence.py     candidate sentences and their scores, the answer text, the answer-slot search
    features.py     the features, each with its expected sign (one decorated function per feature)
    reader.py       the reader: a cross-encoder (bundled MiniLM + shipped adapters) scoring question–sentence pairs
    calibration.py  the fitted artefact: load, save, verify against the index, the feature list and the reader
    context.py      passages numbered and merged, context packed into a token budget
    answerer.py     Answerer.analyze() / Answerer.ask() → AskResult
"""

from __future__ import annotations

import importlib

# what the package exports, imported on first use (PEP 562): `python -m service.ask.reader` (the reader's
# export, run by `make serve` and the image) then runs a module the package has not imported already
_EXPORTS = {
    "NOT_ANSWERED": "answerer", "Analysis": "answerer", "Answerer": "answerer", "AskResult": "answerer",
    "AskUnavailable": "answerer", "UnavailableAnswerer": "answerer", "load_answerer": "answerer",
    "Calibration": "calibration", "CalibrationError": "calibration", "find_calibration": "calibration",
    "load_calibration": "calibration", "BudgetTooSmall": "context", "merge_passages": "context",
    "pack_context": "context",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
