"""Train /v1/ask's reader (service.ask.reader): a cross-encoder from the bundled MiniLM weights scoring "this
sentence answers this question", fitted on some authors' questions and scored on others.

    python -m eval reader --train report:dev,eval/datasets/helpers-a,eval/datasets/helpers-b,... \\
        --score report-external:all --layers 3 --lora 8 --lr 5e-4 [--save DIR]
    make reader      # the served reader, the two fold readers calibrate needs, then the packaged calibration

Pairs: for each question, the top `TOP_CANDIDATES` candidate sentences of /v1/ask's own analysis (the service's
retrieval and sentence ranking); a sentence whose answer text (evidence.answer_text: with the sentence before it
when it refers back, "These concerns …", and the list it introduces, neither of which the pair shows) holds one
of the question's answer strings is a positive, every other one (and every sentence of an unanswerable question)
a negative: 754 of the 2,584 positives of the tuning and reader's helper sets are so only through that text.
(Pairs showing the answer text instead, with readers retrained: the same AUROC, a lower threshold, fewer
near-miss questions refused; not kept, see the README.) Input: question, then heading path and sentence as the
models read it (service.ask.reader.chunk_pair: a section's byline is "Written by …"), cut at 128 word pieces
(pair_tokenizer).
Model: BERT (the bundled all-MiniLM-L6-v2), mean pooling, one linear unit; trained with AdamW, a linear warm-up and
decay, `neg_per_pos` negatives sampled per positive each epoch. Two ways to train what `--save` writes, both in the
adapter format the service merges (W + α/r · B·A), with the question sets' files and checksums:
- `--lora RANK` (served: rank 8 on the first three layers, `--layers 3`, 0.3 MB): the BERT weights stay frozen,
  rank-r adapters on every attention and feed-forward projection are trained;
- `--compress-rank RANK`: every weight is trained, and the change of each of those projections is cut by SVD
  to that rank (low_rank_delta; 5.3 MB at rank 64). Alone it separates the other author's questions better
  (AUROC 0.73–0.77 against 0.65–0.66), but in the calibration it did not refuse more near-miss questions at the
  false-refusal rates that matter (README, *Known limits*).
The service scores one pair per question (its answer sentence); the figures here score a question by the best
of its top `SCORED` sentences, with the weights as saved.

Printed per scored set: AUROC answerable vs near-miss of the reader alone and added by rank to the service's
`confidence` (the calibration in use), and how often the reader's best sentence holds an answer against the
service's choice.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

TOP_CANDIDATES = 15  # candidate sentences per question used for training
SCORED = 5  # a question's score: the best of its first SCORED candidates
LORA_ALPHA = 16.0


@dataclass
class QuestionPairs:
    set_name: str
    qid: str
    style: str
    answerable: bool
    confidence: float  # the service's, with the answerer's calibration (0 without one)
    question: str
    passages: list[str]  # each candidate sentence with its heading path (reader.chunk_pair), the service's order
    labels: list[float]  # 1.0: the sentence holds an answer string


def collect_pairs(dataset, answerer) -> list[QuestionPairs]:
    """Every question of `dataset` with its top candidate sentences, labelled (see the module docstring), and
    the service's `confidence` when `answerer` has a calibration (else 0)."""
    from eval.metrics import hit_at_k
    from service.ask.evidence import answer_text
    from service.ask.reader import chunk_pair

    out = []
    for q in dataset.queries:
        if not q.question:
            continue
        a = answerer.analyze(q.text, k=5)
        cands = a.candidates[:TOP_CANDIDATES]
        conf = answerer.decide(a)[1] if answerer.cal is not None else 0.0
        out.append(QuestionPairs(
            set_name=f"{dataset.name}/{dataset.split}", qid=q.id, style=q.style, answerable=q.answerable,
            confidence=conf, question=a.retrieval_query,
            passages=[chunk_pair(a.hits[c.passage].chunk, c.start, c.end) for c in cands],
            labels=[1.0 if q.answers and hit_at_k([answer_text(a.hits, c)], q.answers, 1) == 1.0 else 0.0
                    for c in cands]))
    return out


def build_model(model_dir, lora_rank: int | None = None, layers: int | None = None):
    """The service's cross-encoder (service.ask.reader.cross_encoder); with `lora_rank`, its BERT weights frozen
    and a trainable rank-r adapter on each of the reader's TARGETS in every layer."""
    import torch

    from service.ask.reader import cross_encoder, targets

    class LoRALinear(torch.nn.Module):
        """A frozen linear layer plus a trainable rank-r update B·A, scaled α / r."""

        def __init__(self, base: torch.nn.Linear, rank: int) -> None:
            super().__init__()
            self.base, self.scale = base, LORA_ALPHA / rank
            self.A = torch.nn.Parameter(torch.randn(rank, base.in_features) * 0.01)
            self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

        def forward(self, x):
            return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale

    model = cross_encoder(model_dir, layers=layers)
    if lora_rank:
        for p in model.bert.parameters():
            p.requires_grad = False
        for layer in model.bert.encoder.layer:
            for owner, name in targets(layer):
                setattr(owner, name, LoRALinear(getattr(owner, name), lora_rank))
    return model


def adapter_tensors(model) -> dict[str, np.ndarray]:
    """The trained part of a LoRA model from build_model: every A and B (fp16) and the linear unit (fp32), named
    as service.ask.reader.merged_model reads them."""
    from service.ask.reader import TARGETS, targets

    out = {}
    for i, layer in enumerate(model.bert.encoder.layer):
        for (path, name), (owner, _) in zip(TARGETS, targets(layer), strict=True):
            lora = getattr(owner, name)
            out[f"layer.{i}.{path}.{name}.A"] = lora.A.detach().numpy().astype(np.float16)
            out[f"layer.{i}.{path}.{name}.B"] = lora.B.detach().numpy().astype(np.float16)
    out["head.weight"] = model.head.weight.detach().numpy().astype(np.float32)
    out["head.bias"] = model.head.bias.detach().numpy().astype(np.float32)
    return out


def low_rank_delta(model, model_dir, rank: int) -> dict[str, np.ndarray]:
    """A fully fine-tuned reader (build_model without adapters, trained) as adapters: for each of TARGETS, the
    change of its weight from the base truncated by SVD to `rank` (B = U·S, A = Vᵀ of the first `rank` singular
    values, scale 1: save with lora_alpha = rank), and the linear unit. What else full fine-tuning changed (biases,
    layer norms, embeddings) is left at the base: on the tuning questions that loses nothing measurable (rank 64:
    report-external AUROC 0.726 vs 0.729 unchanged; rank 8: 0.655)."""
    import torch

    from indexer.lowrank import factor
    from service.ask.reader import TARGETS, cross_encoder, targets

    base = cross_encoder(model_dir, layers=len(model.bert.encoder.layer))
    out = {}
    with torch.no_grad():
        for i, (lb, lf) in enumerate(zip(base.bert.encoder.layer, model.bert.encoder.layer, strict=True)):
            for (path, name), (ob, _), (of, _) in zip(TARGETS, targets(lb), targets(lf), strict=True):
                a, b = factor(getattr(of, name).weight - getattr(ob, name).weight, rank)
                out[f"layer.{i}.{path}.{name}.A"], out[f"layer.{i}.{path}.{name}.B"] = a, b
    out["head.weight"] = model.head.weight.detach().numpy().astype(np.float32)
    out["head.bias"] = model.head.bias.detach().numpy().astype(np.float32)
    return out


def save_reader(out_dir, model, lora_rank: int | None, model_dir, info: dict, compress_rank: int | None = None,
                delta: dict[str, np.ndarray] | None = None):
    """Write the adapters and `reader.json` (with `info`: what it was trained on and how) to `out_dir`, in the
    format service.ask.reader.read_reader checks. `model` has rank-`lora_rank` adapters (build_model), or, with
    `compress_rank`, was fully fine-tuned and is stored as its rank-`compress_rank` change (`delta` when the
    caller has computed it already, else low_rank_delta here)."""
    import hashlib
    import json
    from pathlib import Path

    from safetensors.numpy import save_file

    from indexer.onnx_embed import weights_digest
    from service.ask.reader import FORMAT, MAX_PIECES, META, TARGETS, WEIGHTS

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{WEIGHTS}.tmp"
    if compress_rank:
        lora_rank, alpha = compress_rank, float(compress_rank)
        save_file(delta if delta is not None else low_rank_delta(model, model_dir, compress_rank), str(tmp))
    else:
        alpha = LORA_ALPHA
        save_file(adapter_tensors(model), str(tmp))
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.chmod(0o644)
    tmp.replace(out_dir / WEIGHTS)
    meta = {"format": FORMAT, "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "base_sha256": weights_digest(model_dir), "layers": len(model.bert.encoder.layer),
            "lora_rank": lora_rank, "lora_alpha": alpha, "targets": [f"{p}.{n}" for p, n in TARGETS],
            "max_pieces": MAX_PIECES,
            "input": "[CLS] question [SEP] heading path: sentence [SEP]; mean pooling of the last of `layers` "
                     "layers; one linear unit (logit)",
            "adapter_sha256": digest, **info}
    tmpm = out_dir / f".{META}.tmp"
    tmpm.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmpm.replace(out_dir / META)
    return out_dir


def _batch(tokenizer, questions: list[str], passages: list[str]):
    from service.ask.reader import as_tensors, encode_pairs

    return as_tensors(encode_pairs(tokenizer, questions, passages))


def train(questions: list[QuestionPairs], epochs: int = 5, lr: float = 5e-5, head_lr: float = 1e-3,
          neg_per_pos: float = 4.0, batch_size: int = 16, seed: int = 0, lora_rank: int | None = None,
          threads: int = 2, layers: int | None = None):
    """Fit a reader on the pairs of `questions`; returns (tokenizer, model in eval mode)."""
    import torch

    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pairs = [(q.question, s, y if q.answerable else 0.0) for q in questions
             for s, y in zip(q.passages, q.labels, strict=True)]
    pos = [p for p in pairs if p[2] == 1.0]
    neg = [p for p in pairs if p[2] == 0.0]
    if not pos:
        raise ValueError("no positive pair: the training sets hold no answerable question with its answer retrieved")
    from indexer.embed import bundled_model_dir
    from service.ask.reader import pair_tokenizer

    tok, model = pair_tokenizer(bundled_model_dir()), build_model(bundled_model_dir(), lora_rank, layers)
    trainable = [p for p in model.bert.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": trainable, "lr": lr}, {"params": model.head.parameters(), "lr": head_lr}],
                            weight_decay=0.01)
    n_neg = min(len(neg), int(neg_per_pos * len(pos)))
    steps = max(1, epochs * ((len(pos) + n_neg + batch_size - 1) // batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / (0.1 * steps)) * max(0.0, (steps - i) / steps))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        chosen = pos + random.sample(neg, n_neg)
        random.shuffle(chosen)
        total = 0.0
        for i in range(0, len(chosen), batch_size):
            b = chosen[i : i + batch_size]
            loss = loss_fn(model(**_batch(tok, [p[0] for p in b], [p[1] for p in b])), torch.tensor([p[2] for p in b]))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(b)
        log.info("epoch %d: loss %.4f (%.0f s)", epoch, total / len(chosen), time.perf_counter() - t0)
    model.eval()
    return tok, model


def score(tokenizer, model, questions: list[QuestionPairs], top: int = SCORED) -> list[np.ndarray]:
    """The reader's logit for each of the first `top` candidate sentences of every question."""
    import torch

    out = []
    with torch.no_grad():
        for q in questions:
            s = q.passages[:top]
            out.append(model(**_batch(tokenizer, [q.question] * len(s), s)).numpy() if s else np.zeros(0))
    return out


def figures(questions: list[QuestionPairs], scores: list[np.ndarray]) -> dict:
    """AUROC answerable vs near-miss (reader; reader + confidence by rank) and answer-sentence hit rates."""
    from scipy.stats import rankdata  # ranks with ties averaged

    from eval.metrics import auroc

    rows = [(q, s) for q, s in zip(questions, scores, strict=True) if q.answerable or q.style == "near-miss"]
    best = np.array([float(s.max()) if s.size else -1e9 for _, s in rows])
    conf = np.array([q.confidence for q, _ in rows])
    both = rankdata(best) + rankdata(conf)
    yes = np.array([q.answerable for q, _ in rows])
    ans = [(q, s) for q, s in rows if q.answerable]
    return {"questions": len(rows), "auroc_reader": auroc(best[yes].tolist(), best[~yes].tolist()),
            "auroc_confidence": auroc(conf[yes].tolist(), conf[~yes].tolist()),
            "auroc_reader_plus_confidence": auroc(both[yes].tolist(), both[~yes].tolist()),
            "reader_sentence_holds_answer": float(np.mean([q.labels[int(np.argmax(s))] if s.size else 0.0
                                                           for q, s in ans])) if ans else None,
            "service_sentence_holds_answer": float(np.mean([q.labels[0] if q.labels else 0.0 for q, _ in ans]))
            if ans else None}
