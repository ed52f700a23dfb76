"""The query adapter: a change to the embedding model's weights that is applied to questions only.

Passages are embedded by the bundled all-MiniLM-L6-v2 as it is (the index never changes); questions are
embedded by the same model with a low-rank change of every attention and feed-forward projection of its six
layers (W + (α/r)·B·A, the adapter form of LoRA; TARGETS). The change was trained (eval/query_adapter.py,
`python -m eval query-adapter`) to move a question's vector towards the index's own vectors of the sentence and
the passage that answer it, on question sets written by helper agents about the report (never on the sets the
fusion and the calibration are tuned on, nor on those the service is reported on). So the change is fitted to
the report's passages: it is a property of the corpus as much as of the model, and REPORTQA_QUERY_ADAPTER=none
serves the plain model (for another corpus; see the README, *Query adapter*).

What ships is small (package data, `indexer/query_adapter/`): the adapter pairs (fp16, or int8 with a scale per
rank component: indexer.lowrank.quantize_int8) and
`query_adapter.json`, which records the base weights' checksum, the rank and scale, what it was trained on (file
checksums) and how. Here it is only read: merged into the base weights once into a plain sentence-transformers
model directory (`query_model_dir`, kept under the index's `encoders/`), which the torch encoder loads and
`python -m indexer export-onnx` exports to ONNX Runtime, like the plain model, into a directory of its own
(`onnx_dir`). The export records the adapter's fingerprint, and the service refuses an export made with another
adapter or none (service.state). A calibration records the adapter it was fitted with (`fingerprint`); one
fitted with another (or none) is refused (service.ask.calibration).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from indexer.lowrank import TARGETS, pair_of  # the projections that carry the change; how a pair is stored

FORMAT = 2  # written; 1 (fp16 pairs, before `storage` was recorded) is still read
READABLE_FORMATS = (1, 2)
STORAGES = ("fp16", "int8")  # how the pairs are stored (`storage` in the meta; indexer.lowrank.quantize_int8)
PACKAGED_DIR = Path(__file__).resolve().parent / "query_adapter"
META, WEIGHTS = "query_adapter.json", "adapter.safetensors"
NONE = "none"  # the setting that serves the plain model


class QueryAdapterError(Exception):
    """An unreadable adapter, or one made for other base weights."""


def weight_name(layer: int, path: str, name: str) -> str:
    """The base model's (model.safetensors) name of one adapted projection's weight."""
    return f"encoder.layer.{layer}.{path}.{name}.weight"


def read_adapter(adapter_dir: Path | None = None, model_dir: Path | None = None) -> tuple[Path, dict]:
    """(the adapter's directory, its meta) after checking its format, its weights' checksum and that it was made
    for the base weights of `model_dir` (default: bundled)."""
    from indexer.embed import bundled_model_dir
    from indexer.onnx_embed import weights_digest

    adapter_dir = Path(adapter_dir) if adapter_dir else PACKAGED_DIR
    model_dir = Path(model_dir) if model_dir else bundled_model_dir()
    try:
        meta = json.loads((adapter_dir / META).read_text(encoding="utf-8"))
        data = (adapter_dir / WEIGHTS).read_bytes()
    except (OSError, ValueError) as e:
        raise QueryAdapterError(f"no readable query adapter in {adapter_dir} ({META}, {WEIGHTS}): {e}") from e
    if not isinstance(meta, dict) or not all(k in meta for k in ("lora_rank", "lora_alpha", "adapter_sha256",
                                                                  "base_sha256")):
        raise QueryAdapterError(f"{adapter_dir / META} is not a query adapter's description")
    if meta.get("format") not in READABLE_FORMATS:
        raise QueryAdapterError(f"{adapter_dir / META} has format {meta.get('format')!r}; this code reads "
                                f"{' and '.join(map(str, READABLE_FORMATS))}")
    if meta.get("storage", "fp16") not in STORAGES:
        raise QueryAdapterError(f"{adapter_dir / META} stores its pairs as {meta.get('storage')!r}; this code reads "
                                f"{' and '.join(STORAGES)}")
    if hashlib.sha256(data).hexdigest() != meta.get("adapter_sha256"):
        raise QueryAdapterError(f"{adapter_dir / WEIGHTS} does not match the checksum in {META}")
    if meta.get("base_sha256") != weights_digest(model_dir):
        raise QueryAdapterError(f"the query adapter in {adapter_dir} was trained on other base weights than those "
                                f"in {model_dir}")
    return adapter_dir, meta


def fingerprint(meta: dict | None) -> dict | None:
    """What a calibration records of the query encoder (None: the plain model)."""
    if meta is None:
        return None
    return {"adapter_sha256": meta["adapter_sha256"], "base_sha256": meta["base_sha256"]}


def merge_pairs(base: dict[str, np.ndarray], pairs: dict[str, np.ndarray], scale: float) -> dict[str, np.ndarray]:
    """`base` (a BERT state, as model.safetensors names it) with each adapted projection of `pairs` changed:
    W += scale·B·A, in float32."""
    out = dict(base)
    layers = sorted({int(k.split(".")[1]) for k in pairs})
    for i in layers:
        for path, name in TARGETS:
            key = weight_name(i, path, name)
            if key not in out:
                raise QueryAdapterError(f"the adapter changes {key}, which the base model does not have")
            try:
                a, b = pair_of(pairs, f"layer.{i}.{path}.{name}")
                out[key] = (out[key].astype(np.float32) + scale * (b @ a)).astype(np.float32)
            except (KeyError, ValueError) as e:  # a pair missing, or of the wrong shape
                raise QueryAdapterError(f"the adapter's pair for {key} is missing or does not fit: {e}") from e
    return out


def merged_weights(adapter_dir: Path, model_dir: Path, meta: dict) -> dict[str, np.ndarray]:
    """The base model's tensors with the adapter of `adapter_dir` merged in (scale α/r from its meta)."""
    from safetensors.numpy import load_file

    try:
        pairs = load_file(str(Path(adapter_dir) / WEIGHTS))
    except Exception as e:  # safetensors raises its own errors on a damaged file
        raise QueryAdapterError(f"cannot read {Path(adapter_dir) / WEIGHTS}: {e}") from e
    return merge_pairs(load_file(str(Path(model_dir) / "model.safetensors")), pairs,
                       float(meta["lora_alpha"]) / int(meta["lora_rank"]))


def query_model_dir(cache: Path, adapter_dir: Path | None = None, model_dir: Path | None = None) -> Path:
    """A sentence-transformers model directory with the adapter merged in, under `cache` (made once, named by
    the adapter's and the base weights' checksums; written to a temporary directory and renamed, so a reader
    never sees half of one)."""
    from safetensors.numpy import save_file

    from indexer.embed import bundled_model_dir

    model_dir = Path(model_dir) if model_dir else bundled_model_dir()
    adapter_dir, meta = read_adapter(adapter_dir, model_dir)
    out = Path(cache) / f"query-model-{meta['adapter_sha256'][:16]}-{meta['base_sha256'][:8]}"
    if (out / "model.safetensors").is_file() and (out / META).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".query-model-", dir=out.parent))
    try:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("model.safetensors", "pytorch_model.bin", "*.onnx", "onnx"))
        save_file(merged_weights(adapter_dir, model_dir, meta), str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / META).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        try:
            os.replace(tmp, out)
        except OSError:  # another process made it meanwhile
            if not (out / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve(setting: str | Path | None, model_dir: Path | None = None) -> tuple[Path, dict] | None:
    """The adapter a setting names: None or "packaged" → the one shipped with the code, "none" → None (the plain
    model), else a directory."""
    if setting is not None and str(setting) == NONE:
        return None
    path = None if setting is None or str(setting) == "packaged" else Path(setting)
    return read_adapter(path, model_dir)


def onnx_dir(index_root: Path, fp: dict | None) -> Path:
    """Where `python -m indexer export-onnx` puts, and the service looks for, the ONNX export of the query encoder
    with the adapter of fingerprint `fp`: one directory per adapter (`encoders/onnx` for the plain model, as
    before adapters), so that exports for two adapters, or a service of an older release reading the plain one,
    never meet in one directory."""
    base = Path(index_root) / "encoders"
    return base / "onnx" if fp is None else base / f"onnx-query-{fp['adapter_sha256'][:12]}"


def stale_encoders(index_root: Path, fp: dict | None) -> list[Path]:
    """The merged query models (`query-model-*`) and ONNX exports (`onnx-query-*`) under `<index_root>/encoders` made
    for adapters other than the one of fingerprint `fp` (None: the plain model, whose export `encoders/onnx` is
    never stale; temporary `.query-model-*` directories of a merge under way are not listed): what `python -m
    indexer export-onnx --prune` removes after a new adapter's export (283 MB per adapter here). A service already
    running keeps what it loaded; one started later with another adapter merges it again for torch, but has no
    ONNX export until `python -m indexer export-onnx` makes one (with REPORTQA_ENCODER=auto it encodes with torch
    meanwhile, and says so)."""
    base = Path(index_root) / "encoders"
    if not base.is_dir():
        return []
    keep = set()
    if fp is not None:
        keep = {f"onnx-query-{fp['adapter_sha256'][:12]}",
                f"query-model-{fp['adapter_sha256'][:16]}-{fp['base_sha256'][:8]}"}
    return sorted(d for d in base.iterdir() if d.is_dir() and d.name not in keep
                  and (d.name.startswith("onnx-query-") or d.name.startswith("query-model-")))


def query_embedder(base, cache: Path, setting: str | Path | None = "packaged", threads: int | None = None):
    """What questions are encoded with on torch: `base` itself (the plain model's encoder, which builds indexes)
    when `setting` names no adapter (resolve), else the base weights with the adapter merged in (made once under
    `cache`), which carries the adapter's fingerprint."""
    from indexer.embed import SentenceTransformerEmbedder

    found = resolve(setting)
    if found is None:
        return base
    return SentenceTransformerEmbedder(query_model_dir(cache, found[0]), threads=threads,
                                       query_adapter=fingerprint(found[1]))
