"""Published protocols on a BEIR data set, outside our pipeline, to check the harness against known numbers.

- BM25 as in xhluca/bm25-benchmarks: bm25s (Lucene variant, k1=0.9, b=0.4), English stop words and Snowball
  stemmer, whole documents (title + " " + text), unigrams.
- Dense as in MTEB for all-MiniLM-L6-v2: one vector per document for title + " " + text, which the model
  truncates at 256 word pieces, cosine similarity.

Both are scored with this harness's nDCG@10, so agreement with the published figures validates the metric
and the data handling; our own pipeline (chunked, no truncation, hybrid) is reported beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eval.datasets import Dataset
from eval.metrics import mean, ndcg_at_k, recall_at_k


def _corpus(path: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                ids.append(str(r["_id"]))
                texts.append(f"{r.get('title', '')} {r.get('text', '')}".strip())
    return ids, texts


def _score(dataset: Dataset, ids: list[str], scores: np.ndarray) -> dict:
    nd, rc = [], []
    for qi, q in enumerate(dataset.queries):
        top = np.argsort(-scores[qi], kind="stable")[:100]
        ranked = [ids[i] for i in top]
        nd.append(ndcg_at_k(ranked, q.relevance, 10))
        rc.append(recall_at_k(ranked, q.relevance, 100))
    return {"ndcg@10": mean(nd), "recall@100": mean(rc)}


def bm25_protocol(dataset: Dataset) -> dict:
    import bm25s
    import Stemmer

    from indexer.lexical import _bm25s

    _bm25s()
    ids, texts = _corpus(dataset.corpus_file)
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    q_tokens = bm25s.tokenize([q.text for q in dataset.queries], stopwords="en", stemmer=stemmer,
                              show_progress=False, return_ids=False)
    scores = np.stack([retriever.get_scores(t) if t else np.zeros(len(ids)) for t in q_tokens])
    return _score(dataset, ids, scores)


def mteb_dense_protocol(dataset: Dataset, embedder, cache: Path) -> dict:
    ids, texts = _corpus(dataset.corpus_file)
    cache.mkdir(parents=True, exist_ok=True)
    vec_path = cache / f"{dataset.name}-mteb-doc-vectors.npy"
    if vec_path.is_file():
        docs = np.load(vec_path)
    else:
        docs = embedder.encode(texts, batch_size=32, progress=True)  # truncated at 256 by the model
        np.save(vec_path, docs)
    queries = embedder.encode([q.text for q in dataset.queries], batch_size=64)
    return _score(dataset, ids, queries @ docs.T)
