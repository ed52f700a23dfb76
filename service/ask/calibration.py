"""The fitted abstention model as an artefact: what it was fitted for and on, its weights and threshold.

`python -m eval calibrate` writes it (by default beside the index it was fitted for, `<index>/calibration.json`);
the service finds it at load (`find_calibration`) and refuses one that does not fit what it serves
(`Calibration.verify`, `verify_reader`): another embedding model, other chunker settings, another feature list
than the code's (`features.feature_names()`), or another reader than the one loaded (its adapter checksum).
There is no fallback to "answer everything": without a calibration that fits, /v1/ask answers 503 with the
reason.

The model: confidence = σ(w₀ + Σ wᵢ·(xᵢ − meanᵢ)/scaleᵢ) over the registered features, where each wᵢ keeps
its feature's sign. `answerable` is confidence ≥ threshold (a client may pass another `min_confidence`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from indexer.store import settings_changed
from service.ask.evidence import DEFAULT_SENTENCE_WEIGHTS
from service.ask.features import feature_names

log = logging.getLogger(__name__)

FORMAT = 2
FILENAME = "calibration.json"
PACKAGED = Path(__file__).resolve().parent / FILENAME  # shipped in the wheel (package data)
FIT_HINT = "fit one with: python -m eval calibrate --index <index dir> (see README, Evaluation)"


class CalibrationError(Exception):
    """No calibration, an unreadable one, or one fitted for another model, chunker or feature list."""


@dataclass
class Calibration:
    """A logistic model over the registered features and the threshold chosen for it."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]  # [bias, w_1 … w_n] on standardized features
    threshold: float
    sentence_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SENTENCE_WEIGHTS))
    target: str = "answer right: the question is answerable and the answer sentence holds an answer string"
    fitted_for: dict = field(default_factory=dict)  # model, chunker, index_version, schema_version
    fitted_on: list[dict] = field(default_factory=list)  # question sets: dataset, split, files + sha256, counts
    fitted_at: str = ""
    metrics: dict = field(default_factory=dict)
    format: int = FORMAT
    path: str | None = None  # where it was read from (not saved)

    # -- the model --------------------------------------------------------------------------------------
    def confidence(self, x: np.ndarray) -> float:
        z = (x - np.array(self.mean)) / np.array(self.scale)
        return float(1 / (1 + math.exp(-(self.weights[0] + float(np.dot(self.weights[1:], z))))))

    # -- the artefact -----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"no calibration at {path}; {FIT_HINT}") from None
        except (OSError, ValueError) as e:
            raise CalibrationError(f"cannot read the calibration {path}: {e}; {FIT_HINT}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"{path} is not a calibration of format {FORMAT} (found "
                                   f"{data.get('format') if isinstance(data, dict) else type(data).__name__}); "
                                   f"{FIT_HINT}")
        data.pop("path", None)
        try:
            cal = cls(**data, path=str(path))
        except TypeError as e:
            raise CalibrationError(f"{path} is malformed: {e}; {FIT_HINT}") from None
        n = len(cal.features)
        if not (len(cal.mean) == len(cal.scale) == n and len(cal.weights) == n + 1):
            raise CalibrationError(f"{path} is malformed: {n} features but {len(cal.mean)} means, "
                                   f"{len(cal.scale)} scales, {len(cal.weights)} weights; {FIT_HINT}")
        return cal

    def save(self, path: Path) -> None:
        data = asdict(self)
        data.pop("path")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)

    def relabelled_for(self, manifest: dict) -> Calibration:
        """This calibration's weights declared fitted for another index's model and chunker. Only for drills
        and tests on an index built with the fake hashing embedder: its confidences then mean nothing, but
        /v1/ask answers (the HTTP surface is exercised) instead of refusing with a 503."""
        fitted_for = {**self.fitted_for, "model": (manifest.get("model") or {}).get("name"),
                      "chunker": manifest.get("chunker"), "index_version": manifest.get("index_version"),
                      "query_adapter": None, "fusion": None}  # the fake embedder: no adapter, its default α
        return replace(self, fitted_for=fitted_for)

    def verify(self, manifest: dict) -> None:
        """Refuse a calibration fitted for another feature list, embedding model or chunker than the code and
        the index `manifest` in use. (Another index version of the same corpus and settings is fine.)"""
        where = self.path or "the calibration"
        if self.features != list(feature_names()):
            missing = [f for f in feature_names() if f not in self.features]
            extra = [f for f in self.features if f not in feature_names()]
            raise CalibrationError(f"{where} was fitted for other features (the code adds {missing or 'none'}, "
                                   f"drops {extra or 'none'}); {FIT_HINT}")
        model = (manifest.get("model") or {}).get("name")
        if self.fitted_for.get("model") != model:
            raise CalibrationError(f"{where} was fitted for the model {self.fitted_for.get('model')!r}, the index "
                                   f"uses {model!r}; {FIT_HINT}")
        chunker = manifest.get("chunker")
        if self.fitted_for.get("chunker") != chunker:
            diff = settings_changed(self.fitted_for.get("chunker"), chunker)
            raise CalibrationError(f"{where} was fitted for other chunker settings than the index's (differs in: "
                                   f"{', '.join(diff) or 'all'}); {FIT_HINT}")
        if self.fitted_for.get("index_version") != manifest.get("index_version"):
            log.info("calibration %s was fitted on index %s; serving %s (same model and chunker)", where,
                     self.fitted_for.get("index_version"), manifest.get("index_version"))

    @property
    def needs_reader(self) -> bool:
        return "reader" in self.features

    def verify_reader(self, fingerprint: dict | None) -> None:
        """Refuse a calibration fitted with another reader than the one loaded (`fingerprint`, None: none)."""
        where = self.path or "the calibration"
        fitted = self.fitted_for.get("reader")
        if self.needs_reader and fitted != fingerprint:
            if fitted is None:
                what = "records no reader"
            elif fingerprint is None:
                what = "no reader is loaded"
            else:
                what = "the loaded one differs in " + "; ".join(
                    f"{k} ({fitted.get(k)!r} fitted, {fingerprint.get(k)!r} loaded)"
                    for k in sorted(set(fitted) | set(fingerprint)) if fitted.get(k) != fingerprint.get(k))
            raise CalibrationError(f"{where} was fitted with the reader feature, but {what}; {FIT_HINT}")

    def verify_query_adapter(self, fingerprint: dict | None) -> None:
        """Refuse a calibration fitted with questions encoded otherwise than the query encoder in use does (another
        query adapter, or one where there is none: `fingerprint`, indexer.query_adapter.fingerprint)."""
        fitted = self.fitted_for.get("query_adapter")
        if fitted != fingerprint:

            def said(fp) -> str:
                if fp is None:
                    return "the plain model"
                return f"the query adapter {str(fp.get('adapter_sha256', '?'))[:16]}" if isinstance(fp, dict) \
                    else f"an unreadable query adapter record ({fp!r})"

            raise CalibrationError(f"{self.path or 'the calibration'} was fitted with questions encoded by "
                                   f"{said(fitted)}; the service encodes them with {said(fingerprint)} "
                                   f"(REPORTQA_QUERY_ADAPTER); {FIT_HINT}")

    def verify_fusion(self, fusion) -> None:
        """Refuse a calibration fitted with another hybrid fusion than the retriever's (`fusion`, a FusionConfig):
        the candidates and their scores, and so the features, would not be those of the fit. (A calibration that
        records no fusion, fitted before it was recorded, is not checked.)"""
        fitted = self.fitted_for.get("fusion")
        if fitted is None:
            return
        if not isinstance(fitted, dict):
            raise CalibrationError(f"{self.path or 'the calibration'} records an unreadable fusion ({fitted!r}); "
                                   f"{FIT_HINT}")
        diff = {k: (v, getattr(fusion, k, None)) for k, v in fitted.items() if getattr(fusion, k, None) != v}
        if diff:
            said = "; ".join(f"{k} {a!r} fitted, {b!r} served" for k, (a, b) in sorted(diff.items()))
            raise CalibrationError(f"{self.path or 'the calibration'} was fitted with another hybrid fusion ({said}; "
                                   f"REPORTQA_FUSION_ALPHA, REPORTQA_SENTENCE_WEIGHT); {FIT_HINT}")

    def describe(self) -> dict:
        """What GET /v1/index reports."""
        return {"path": self.path, "threshold": self.threshold, "target": self.target,
                "fitted_for": self.fitted_for, "fitted_on": self.fitted_on, "fitted_at": self.fitted_at,
                "features": self.features, "metrics": self.metrics}


def find_calibration(index_dirs: list[Path], explicit: Path | None = None) -> Path:
    """Where the calibration is: `explicit` (REPORTQA_CALIBRATION) if given, else the first of
    `<index dir>/calibration.json` that exists, else the packaged default shipped with the code."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise CalibrationError(f"REPORTQA_CALIBRATION={explicit} does not exist; {FIT_HINT}")
        return Path(explicit)
    for d in index_dirs:
        if (Path(d) / FILENAME).is_file():
            return Path(d) / FILENAME
    if PACKAGED.is_file():
        return PACKAGED
    raise CalibrationError(f"no calibration beside the index ({', '.join(str(d) for d in index_dirs)}) and none "
                           f"packaged; {FIT_HINT}")


def load_calibration(manifest: dict, index_dirs: list[Path], explicit: Path | None = None) -> Calibration:
    """Find, read and verify the calibration for the index whose manifest is given."""
    cal = Calibration.load(find_calibration(index_dirs, explicit))
    cal.verify(manifest)
    return cal
