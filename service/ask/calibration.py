"""The fitted abstention model: a calibration artefact with load, save and verification.

Written by `python -m eval calibrate`; read once when the service loads an index.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.ask.evidence import DEFAULT_SENTENCE_WEIGHTS
from service.ask.features import feature_names

PACKAGED = Path(__file__).resolve().parent / "calibration.json"


@dataclass
class Calibration:
    """Logistic models over the registered features: one for answerability, one for "the answer is right"."""

    mean: list[float] = field(default_factory=lambda: [0.0] * len(feature_names()))
    scale: list[float] = field(default_factory=lambda: [1.0] * len(feature_names()))
    answerable_w: list[float] = field(default_factory=lambda: [0.0] * (len(feature_names()) + 1))
    correct_w: list[float] = field(default_factory=lambda: [0.0] * (len(feature_names()) + 1))
    threshold: float = 0.5
    sentence_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SENTENCE_WEIGHTS))
    fitted_on: str = "defaults"

    @classmethod
    def load(cls, path: Path = PACKAGED) -> Calibration:
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("features") != list(feature_names()):
            raise ValueError(f"{path} was fitted for other features; run `python -m eval calibrate`")
        data.pop("features", None)
        data.pop("metrics", None)
        return cls(**data)

    def save(self, path: Path = PACKAGED, metrics: dict | None = None) -> None:
        data = {"features": list(feature_names()), **self.__dict__, "metrics": metrics or {}}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    def _prob(self, w: list[float], x: np.ndarray) -> float:
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return float(1 / (1 + math.exp(-(w[0] + float(np.dot(w[1:], z))))))

    def p_answerable(self, x: np.ndarray) -> float:
        return self._prob(self.answerable_w, x)

    def p_correct(self, x: np.ndarray) -> float:
        return self._prob(self.correct_w, x)
