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

from service.ask.answerer import (
    NOT_ANSWERED,
    Analysis,
    Answerer,
    AskResult,
    AskUnavailable,
    UnavailableAnswerer,
    load_answerer,
)
from service.ask.calibration import Calibration, CalibrationError, find_calibration, load_calibration
from service.ask.context import BudgetTooSmall, merge_passages, pack_context

__all__ = ["NOT_ANSWERED", "Analysis", "Answerer", "AskResult", "AskUnavailable", "BudgetTooSmall", "Calibration",
           "CalibrationError", "UnavailableAnswerer", "find_calibration", "load_answerer", "load_calibration",
           "merge_passages", "pack_context"]
