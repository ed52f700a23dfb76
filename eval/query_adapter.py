"""Train the query adapter (indexer.query_adapter): the embedding model fine-tuned on questions only, against the
index's fixed passage and sentence vectors.

    python -m eval query-adapter --train eval/datasets/helpers-a,...,helpers-n \\
        --score report:dev,report-external:all,report:test,report:fresh [--save indexer/query_adapter]
    make query-adapter    # the packaged adapter (about 7 min), then the packaged calibration

For each answerable question: its positives are the index's sentences that hold one of its answer strings and
the passages (chunks) that do. The question is encoded by the model being trained (mean pooling, L2 norm, as
sentence-transformers does); the passages and sentences are not encoded at all: their vectors are read from the
index, so they stay those of the plain model. The loss is the cross-entropy of the positives against every
sentence of the index (scaled cosines, `scale`), plus the same over every passage: a question learns to point at
its answer among all of the report's sentences, the other sentences being the negatives. Each softmax also has a
"no answer" class, one trained logit (a cosine level, one for sentences and one for passages): the unanswerable
questions of the training sets (near-miss and off-topic) take it as their target, weighted `null_weight`, so they
learn to sit below it, away from every sentence, while an answerable question must rise above it to its answer.
That makes the question's highest cosine a sign of whether the report answers it at all (SQuAD 2.0's no-answer
score, in the embedding space): without it, a near-miss question names the report's own entities and finds a
closer sentence than an answerable one does. The ranking of sentences for one question is untouched by the
class (it is one more column, the same for every sentence). Every weight is
trained (AdamW, linear warm-up and decay); the change of each projection in TARGETS is then cut to `rank` by SVD
and saved in the adapter format (W + (α/r)·B·A with α = r), with what it was trained on. What else training
changed (biases, layer norms, embeddings) is left at the base.

The sets it trains on must be none of the human-written ones that tune the fusion and the calibration (report
dev, report-external) or of those that are reported (test, fresh, the held-out helper sets: eval/sets.py): those
stay questions the adapter never saw (the calibration also fits on two helper sets the adapter trains on, m
and n). The command refuses such a set (by name and by file checksum) and drops any training question that one
of them also asks (the same words; the helper sets repeat four of them).

Printed per scored set, for the plain model and the adapter (the full change and as saved): how often the
index's closest sentence holds an answer (sentence@1) and how often the closest passage does (passage@1), dense
only (the service's hybrid figures come from `python -m eval run`).
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

MAX_QUESTION_PIECES = 64


def positives(retriever, answers: list[str]) -> tuple[list[int], list[int]]:
    """(sentence rows, chunk rows) of the index whose text holds one of `answers` (case-insensitive)."""
    wanted = [a.lower() for a in answers if a]
    sents, chunks = [], []
    for row in range(len(retriever.chunks)):
        c = retriever.chunks[row]
        text = c["text"]
        if not any(a in text.lower() for a in wanted):
            continue
        chunks.append(row)
        start = int(retriever.sentence_starts[row])
        for j, (s, e) in enumerate(c["sentences"]):
            if any(a in text[s:e].lower() for a in wanted):
                sents.append(start + j)
    return sents, chunks


def normalized(text: str) -> str:
    """A question's text for comparing sets: lower case, words only."""
    return " ".join(re.findall(r"\w+", text.lower()))


Item = tuple[str, list[int] | None, list[int] | None]  # (question, positive sentences, positive chunks)


def similar_items(items: list[Item], guarded_texts: list[str], jaccard: float) -> list[bool]:
    """For each item, whether its question's word set has a Jaccard similarity of at least `jaccard` with one of
    `guarded_texts`'s: a close paraphrase, for the leakage control (leakage_drop)."""
    guarded = [set(normalized(t).split()) for t in guarded_texts]
    out = []
    for text, _, _ in items:
        words = set(normalized(text).split())
        out.append(any(len(words & g) / max(1, len(words | g)) >= jaccard for g in guarded))
    return out


def leakage_drop(items: list[Item], guarded_texts: list[str], jaccard: float, at_random: bool = False,
                 seed: int = 0) -> tuple[list[Item], dict]:
    """The leakage control: `items` without the close paraphrases of `guarded_texts` (similar_items), or, with
    `at_random`, without as many items chosen at random, as many answerable and as many unanswerable ones as the
    paraphrases would remove (the control's control: what the smaller training set alone costs). Returns the
    kept items and what was dropped."""
    close = similar_items(items, guarded_texts, jaccard)
    kinds = {"answerable": [i for i, it in enumerate(items) if it[1] is not None],
             "unanswerable": [i for i, it in enumerate(items) if it[1] is None]}
    counts = {k: sum(close[i] for i in rows) for k, rows in kinds.items()}
    if at_random:
        rng = random.Random(seed)
        drop = {i for k, rows in kinds.items() for i in rng.sample(rows, counts[k])}
    else:
        drop = {i for i, c in enumerate(close) if c}
    kept = [it for i, it in enumerate(items) if i not in drop]
    return kept, {"jaccard": jaccard, "at_random": at_random, **counts}


def training_items(datasets, retriever, exclude: set[str] | None = None, unanswerable: bool = False) -> list[Item]:
    """(question, positive sentences, positive chunks) of every answerable question whose answer the index holds,
    and with `unanswerable` (question, None, None) of every unanswerable one (its target: the "no answer" class),
    except those whose normalized text is in `exclude` (the same question in a set it must not learn)."""
    out = []
    for d in datasets:
        for q in d.queries:
            if not q.question or normalized(q.text) in (exclude or ()):
                continue
            if q.answers:
                sents, chunks = positives(retriever, q.answers)
                if chunks:
                    out.append((q.text, sents, chunks))
            elif unanswerable and not q.answerable:
                out.append((q.text, None, None))
    return out


def _encode(model, texts: list[str], grad: bool):
    import torch

    feats = model.tokenizer(texts, padding=True, truncation=True, max_length=MAX_QUESTION_PIECES,
                            return_tensors="pt")
    with torch.set_grad_enabled(grad):
        h = model[0].auto_model(**feats).last_hidden_state
        mask = feats["attention_mask"].unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)


def _multi_positive_loss(logits: torch.Tensor, positive_rows: list[list[int] | None], null: torch.Tensor | None = None,
                         null_weight: float = 1.0) -> torch.Tensor:
    """Mean over the questions of −log(Σ exp over its positives / Σ exp over all), where "all" has one more column,
    the "no answer" logit `null` when given; a question whose positives are None is unanswerable: its target is
    that column, weighted `null_weight`. A question with an empty list of positives is left out."""
    import torch

    n = logits.shape[0]
    if null is not None:
        logits = torch.cat([logits, null.reshape(1, 1).expand(n, 1)], 1)
    # the target columns of each row (a boolean mask) and its weight; rows left out weigh 0
    target = torch.zeros_like(logits, dtype=torch.bool)
    weight = torch.zeros(n, dtype=logits.dtype)
    for i, p in enumerate(positive_rows):
        if p is None and null is not None:
            target[i, -1], weight[i] = True, null_weight
        elif p:
            target[i, p], weight[i] = True, 1.0
    kept = weight > 0
    if not kept.any():
        return logits.sum() * 0.0
    rows = logits[kept]  # one autograd op for the batch, not one per question
    positives = torch.logsumexp(rows.masked_fill(~target[kept], float("-inf")), 1)
    return ((torch.logsumexp(rows, 1) - positives) * weight[kept]).mean()


def train(items: list[Item], sentence_vectors: np.ndarray, chunk_vectors: np.ndarray, model_dir, epochs: int = 5,
          lr: float = 2e-5, scale: float = 20.0, batch: int = 16, seed: int = 0, progress: bool = True,
          null_weight: float = 3.0, null_start: float = 0.6) -> tuple[SentenceTransformer, tuple[float, float] | None]:
    """Fine-tune every weight of the sentence-transformers model at `model_dir` on `items` (training_items);
    returns (model, the "no answer" cosine levels it ended with: sentences, passages). The levels start at
    `null_start` and are trained with a larger step (1e-2): two scalars. With `null_weight` 0 there is no "no
    answer" class (unanswerable items are then ignored)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = SentenceTransformer(str(model_dir), device="cpu")
    sv = torch.from_numpy(np.array(sentence_vectors, dtype=np.float32))  # a copy: the index's are read-only
    cv = torch.from_numpy(np.array(chunk_vectors, dtype=np.float32))
    use_null = null_weight > 0
    null_s = torch.nn.Parameter(torch.tensor(scale * null_start))
    null_c = torch.nn.Parameter(torch.tensor(scale * null_start))
    opt = torch.optim.AdamW([{"params": model.parameters(), "lr": lr, "weight_decay": 0.01},
                             {"params": [null_s, null_c], "lr": 1e-2, "weight_decay": 0.0}])
    steps = epochs * ((len(items) + batch - 1) // batch)
    warm = max(1, int(0.1 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / steps))
    items = list(items)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        rng.shuffle(items)
        total = 0.0
        for b in range(0, len(items), batch):
            part = items[b : b + batch]
            q = _encode(model, [t for t, _, _ in part], grad=True)
            loss = (_multi_positive_loss(scale * q @ sv.T, [s for _, s, _ in part], null_s if use_null else None,
                                         null_weight)
                    + _multi_positive_loss(scale * q @ cv.T, [c for _, _, c in part], null_c if use_null else None,
                                           null_weight))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {total:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    levels = (null_s.item() / scale, null_c.item() / scale) if use_null else None
    return model.eval(), levels


def low_rank_change(model, model_dir, rank: int, storage: str = "fp16") -> dict[str, np.ndarray]:
    """The change of each projection in TARGETS from the base weights, cut to `rank` by SVD (B = U·S, A = Vᵀ of
    the first `rank` singular values; scale 1, i.e. α = rank), stored (indexer.query_adapter.STORAGES) in fp16 or in
    int8 with a scale per rank component (indexer.lowrank.quantize_int8), named as indexer.query_adapter reads
    them."""
    import torch
    from safetensors.numpy import load_file

    from indexer.lowrank import factor, quantize_int8
    from indexer.query_adapter import STORAGES, TARGETS, weight_name

    if storage not in STORAGES:
        raise ValueError(f"storage is one of {', '.join(STORAGES)}, not {storage!r}")

    base = load_file(str(model_dir / "model.safetensors"))
    tuned = dict(model[0].auto_model.named_parameters())
    out = {}
    with torch.no_grad():
        for i in range(len(model[0].auto_model.encoder.layer)):
            for path, name in TARGETS:
                key = weight_name(i, path, name)
                delta = tuned[key].detach() - torch.from_numpy(base[key].astype(np.float32))
                if storage == "int8":
                    pair = quantize_int8(*factor(delta, rank, dtype=np.float32))
                else:
                    a, b = factor(delta, rank)
                    pair = {"A": a, "B": b}
                out.update({f"layer.{i}.{path}.{name}.{k}": v for k, v in pair.items()})
    return out


def save_adapter(out_dir, tensors: dict[str, np.ndarray], rank: int, model_dir, info: dict):
    """Write `tensors` and query_adapter.json (with `info`) to `out_dir`, each under a temporary name, renamed."""
    import hashlib
    import json
    from pathlib import Path

    from safetensors.numpy import save_file

    from indexer.onnx_embed import weights_digest
    from indexer.query_adapter import FORMAT, META, TARGETS, WEIGHTS

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{WEIGHTS}.tmp"
    save_file(tensors, str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.chmod(0o644)
    tmp.replace(out_dir / WEIGHTS)
    storage = "int8" if any(v.dtype == np.int8 for v in tensors.values()) else "fp16"
    meta = {"format": FORMAT, "storage": storage, "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "base_sha256": weights_digest(Path(model_dir)), "lora_rank": rank, "lora_alpha": float(rank),
            "targets": [f"{p}.{n}" for p, n in TARGETS], "applies_to": "questions only (passages: the base model)",
            "adapter_sha256": digest, **info}
    tmpm = out_dir / f".{META}.tmp"
    tmpm.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmpm.replace(out_dir / META)
    return out_dir


def merged_model(model_dir, tensors: dict[str, np.ndarray]):
    """The sentence-transformers model at `model_dir` with the saved change `tensors` (α = rank) merged in: what
    the service will encode questions with."""
    import torch
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    from indexer.query_adapter import merge_pairs

    model = SentenceTransformer(str(model_dir), device="cpu")
    merged = merge_pairs(load_file(str(model_dir / "model.safetensors")), tensors, 1.0)
    model[0].auto_model.load_state_dict({k: torch.from_numpy(v) for k, v in merged.items()}, strict=False)
    return model.eval()


def dense_figures(model, items: list[Item], sentence_vectors: np.ndarray, chunk_vectors: np.ndarray,
                  near_miss: list[str] | None = None) -> dict:
    """sentence@1 and passage@1 of the closest sentence / passage by cosine (dense only) over the answerable
    `items`; with `near_miss` questions, the AUROC answerable vs near-miss of the highest sentence cosine and of
    the highest passage cosine (what the "no answer" class trains)."""
    import torch

    from eval.metrics import auroc

    items = [i for i in items if i[1] is not None]
    if not items:
        return {"questions": 0}
    sv, cv = np.asarray(sentence_vectors, dtype=np.float32), np.asarray(chunk_vectors, dtype=np.float32)
    with torch.no_grad():
        q = _encode(model, [t for t, _, _ in items] + list(near_miss or []), grad=False).numpy()
    s, c = q @ sv.T, q @ cv.T
    n = len(items)
    out = {"questions": n,
           "sentence@1": float(np.mean([int(j) in p for j, (_, p, _) in zip(s[:n].argmax(1), items, strict=True)])),
           "passage@1": float(np.mean([int(j) in p for j, (_, _, p) in zip(c[:n].argmax(1), items, strict=True)]))}
    if near_miss:
        for name, m in (("sentence", s.max(1)), ("passage", c.max(1))):
            out[f"auroc_top_{name}"] = auroc(m[:n].tolist(), m[n:].tolist())
    return out
