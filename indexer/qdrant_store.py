"""The Qdrant backend of the vector store: one collection per index version, an alias naming the served one.

A collection is written from an index version directory (`indexer.store`), so that FAISS and Qdrant serve the
same data and the chunk records, catalog and calibration keep living in the version directory:

    collection  <alias>--<version>        e.g. reportqa--2026-11-25T09-30-16Z-2c9ea9 (never modified once aliased)
    alias       <alias>                   the collection to serve; switched in one update_collection_aliases call
    point id    the chunk's row (unsigned int; row i = chunk i of the version); payload: row, chunk_id, doc_id,
                sections (the section keys a section filter matches: headings at any level, lower-cased, anchor)
    vectors     "chunk"      the chunk vector (dense, DOT: vectors are unit length, so dot = cosine, as FAISS IP)
                "sentences"  the chunk's sentence vectors (multivector, MAX_SIM: with one query vector the score is
                             the cosine of the chunk's best sentence, our "best sentence" re-scoring)
                "bm25"       sparse: one value per analyzed term (ids of the version's bm25s vocabulary)

BM25 as a sparse dot product. bm25s (method "lucene") scores a chunk as the sum over query terms t of
idf(t)·tf/(tf + k1·(1 − b + b·dl/avgdl)), idf = ln(1 + (N − df + 0.5)/(df + 0.5)); a query term repeated
counts again. Two ways of storing it (`bm25_idf`):

- "global" (default): the stored value is the whole per-term score bm25s computed (idf included, read off its
  score matrix) and the query value is 1.0 per term occurrence; no modifier. Exact on any number of shards,
  since nothing is computed per shard.
- "modifier": the stored value is tf/(tf + k1·(1 − b + b·dl/avgdl)) and the sparse vector has Modifier.IDF, so
  Qdrant multiplies the IDF it computes from the collection. Equal to bm25s on one shard (tests check it); on a
  sharded cluster Qdrant computes IDF per shard, which is no longer exact.

Searches ask for exact scoring (`SearchParams(exact=True)`) by default, the counterpart of FAISS Flat; set
`exact=False` on a large collection to use Qdrant's HNSW.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DENSE = "chunk"
SENTENCES = "sentences"
SPARSE = "bm25"
SEPARATOR = "--"
DEFAULT_ALIAS = "reportqa"
UPSERT_BATCH = 256
BM25_IDF_MODES = ("global", "modifier")



def unpack_points(points) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of scored points whose ids are rows (local mode, a server or the edge engine alike)."""
    rows = np.fromiter((int(p.id) for p in points), dtype=np.int64, count=len(points))
    scores = np.fromiter((p.score for p in points), dtype=np.float64, count=len(points))
    return rows, scores

class QdrantBackendError(Exception):
    """The Qdrant backend cannot serve or publish (no alias, missing collection, wrong point count)."""


def collection_name(alias: str, version: str) -> str:
    return f"{alias}{SEPARATOR}{version}"


def version_of(alias: str, collection: str) -> str | None:
    """The index version a collection of `alias` holds, None when the name is not one of ours."""
    prefix = alias + SEPARATOR
    return collection[len(prefix):] if collection.startswith(prefix) and len(collection) > len(prefix) else None


def is_local(client) -> bool:
    """Whether `client` runs qdrant-client's local mode (pure Python: exact search only, no payload indexes)."""
    return type(getattr(client, "_client", None)).__name__ == "QdrantLocal"


def make_client(url: str | None = None, path: str | Path | None = None, api_key: str | None = None,
                timeout: int = 30):
    """A QdrantClient: a server (`url`), local mode on disk (`path`), or local mode in memory (neither)."""
    from qdrant_client import QdrantClient

    if url:
        return QdrantClient(url=url, api_key=api_key, timeout=timeout)
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        return QdrantClient(path=str(path))
    return QdrantClient(":memory:")


# -- BM25 as sparse vectors ----------------------------------------------------------------------------


def bm25_idf(lexical) -> np.ndarray:
    """idf of every term of a bm25s index (lucene: ln(1 + (N − df + 0.5)/(df + 0.5)), df from its matrix)."""
    indptr = np.asarray(lexical.scores["indptr"], dtype=np.int64)
    n = float(lexical.scores["num_docs"])
    df = np.diff(indptr).astype(np.float64)
    return np.log1p((n - df + 0.5) / (df + 0.5))


def sparse_documents(lexical, mode: str = "global") -> list[tuple[np.ndarray, np.ndarray]]:
    """(term ids, values) of every document of a bm25s index, in row order, read off its CSC score matrix
    (bm25s stores idf·tfc per term and document). "modifier": values divided by idf (tfc only)."""
    if mode not in BM25_IDF_MODES:
        raise ValueError(f"bm25_idf must be one of {BM25_IDF_MODES}, not {mode!r}")
    data = np.asarray(lexical.scores["data"], dtype=np.float64)
    indices = np.asarray(lexical.scores["indices"], dtype=np.int64)  # document of each non-zero
    indptr = np.asarray(lexical.scores["indptr"], dtype=np.int64)
    n_docs = int(lexical.scores["num_docs"])
    terms = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
    if mode == "modifier":
        data = data / bm25_idf(lexical)[terms]
    order = np.lexsort((terms, indices))  # by document, then term
    docs, terms, data = indices[order], terms[order], data[order]
    bounds = np.searchsorted(docs, np.arange(n_docs + 1))
    return [(terms[a:b], data[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def sparse_query(vocab: dict[str, int], terms: Sequence[str]) -> tuple[list[int], list[float]]:
    """The query's sparse vector: 1.0 per occurrence of each term the vocabulary holds (bm25s counts a
    repeated query term again)."""
    counts: dict[int, float] = {}
    for t in terms:
        j = vocab.get(t)
        if j is not None:
            counts[j] = counts.get(j, 0.0) + 1.0
    ids = sorted(counts)
    return ids, [counts[j] for j in ids]


# -- writing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    collection: str
    alias: str
    points: int
    switched: bool
    reused: bool  # the collection existed already with every point: only the alias moved
    pruned: list[str]
    seconds: float


class _DenseRows:
    """Row i of a FAISS index's vectors: a view of a Flat / HNSW…,Flat index, else reconstructed in blocks
    (an index that keeps its vectors elsewhere, such as IVF: its direct map is built once)."""

    BLOCK = 4096

    def __init__(self, faiss_index) -> None:
        from indexer.vectors import flat_view

        self.index = faiss_index
        try:
            self.view = flat_view(faiss_index)
        except TypeError:
            import faiss

            self.view = None
            faiss.extract_index_ivf(faiss_index).make_direct_map()
            self._start, self._block = -1, np.zeros((0, faiss_index.d), np.float32)

    def __getitem__(self, i: int) -> np.ndarray:
        if self.view is not None:
            return self.view[i]
        if not self._start <= i < self._start + len(self._block):
            self._start = i - i % self.BLOCK
            self._block = self.index.reconstruct_n(self._start, min(self.BLOCK, self.index.ntotal - self._start))
        return self._block[i - self._start]


def _points(index, mode: str) -> Iterator:
    from qdrant_client import models

    from indexer.store import section_keys

    # the exact float32 vectors by row (an IVF index's are in chunk_vectors.npy; its lists hold 8-bit codes)
    dense = index.chunk_vectors if index.chunk_vectors is not None else _DenseRows(index.dense)
    counts = index.rows["sentence_counts"].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    sparse = sparse_documents(index.lexical, mode)
    sv = index.sentence_vectors
    for i in range(len(index.chunks)):
        c = index.chunks[i]
        ids, vals = sparse[i]
        yield models.PointStruct(
            id=i,
            vector={DENSE: dense[i].tolist(),
                    SENTENCES: np.asarray(sv[starts[i] : starts[i] + counts[i]], dtype=np.float32).tolist(),
                    SPARSE: models.SparseVector(indices=ids.tolist(), values=vals.tolist())},
            payload={"row": i, "chunk_id": c["chunk_id"], "doc_id": c["doc_id"], "sections": sorted(section_keys(c))},
        )


def create_collection(client, name: str, dim: int, mode: str = "global", shards: int | None = None,
                      replicas: int | None = None, metadata: dict | None = None) -> None:
    from qdrant_client import models

    client.create_collection(
        name,
        vectors_config={
            DENSE: models.VectorParams(size=dim, distance=models.Distance.DOT),
            SENTENCES: models.VectorParams(size=dim, distance=models.Distance.DOT,
                                           multivector_config=models.MultiVectorConfig(
                                               comparator=models.MultiVectorComparator.MAX_SIM),
                                           hnsw_config=models.HnswConfigDiff(m=0)),  # re-scoring only: no graph
        },
        sparse_vectors_config={SPARSE: models.SparseVectorParams(
            modifier=models.Modifier.IDF if mode == "modifier" else None)},
        shard_number=shards, replication_factor=replicas, metadata=metadata,
    )
    if is_local(client):
        return  # local mode ignores payload indexes (and warns)
    for field, schema in (("doc_id", models.PayloadSchemaType.KEYWORD), ("sections", models.PayloadSchemaType.KEYWORD),
                          ("row", models.PayloadSchemaType.INTEGER)):
        client.create_payload_index(name, field, field_schema=schema)  # a server filters with them; local mode ignores


def collections_of(client, alias: str) -> list[str]:
    """The collections holding versions of `alias`, oldest first (version names begin with the build time)."""
    names = [c.name for c in client.get_collections().collections]
    return sorted(n for n in names if version_of(alias, n) is not None)


def alias_target(client, alias: str) -> str | None:
    """The collection `alias` names, None when there is no such alias."""
    for a in client.get_aliases().aliases:
        if a.alias_name == alias:
            return a.collection_name
    return None


def switch_alias(client, alias: str, collection: str) -> None:
    """Point `alias` at `collection` in one request (delete + create are applied together by Qdrant)."""
    from qdrant_client import models

    ops: list = []
    if alias_target(client, alias) is not None:
        ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
    ops.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection,
                                                                           alias_name=alias)))
    client.update_collection_aliases(change_aliases_operations=ops)


def prune_collections(client, alias: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` collections of `alias`, never the one it names."""
    current = alias_target(client, alias)
    names = collections_of(client, alias)
    doomed = [n for n in names[: max(0, len(names) - keep)] if n != current]
    for n in doomed:
        client.delete_collection(n)
        log.info("pruned collection %s", n)
    return doomed


def publish(client, index, alias: str = DEFAULT_ALIAS, activate: bool = True, keep: int = 3,
            mode: str = "global", shards: int | None = None, replicas: int | None = None,
            prune: bool = True) -> PublishResult:
    """Write the loaded index version `index` (indexer.store.IndexData) as the collection <alias>--<version>,
    point `alias` at it (when `activate`) and prune collections beyond `keep` (unless not `prune`: a
    rollback deletes nothing). A collection of that name holding every point already is reused (only the
    alias moves); one that is incomplete is rewritten."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    t0 = time.time()
    name = collection_name(alias, index.version)
    n = len(index.chunks)
    reused = False
    if client.collection_exists(name):
        count = client.count(name, exact=True).count
        if count == n:
            reused = True
        else:
            log.warning("collection %s holds %d of %d points: rewriting it", name, count, n)
            if alias_target(client, alias) == name:
                raise QdrantBackendError(f"the alias {alias} names the incomplete collection {name}; point it "
                                         "elsewhere before rewriting it")
            client.delete_collection(name)
    if not reused:
        create_collection(client, name, int(index.manifest["model"]["dim"]), mode, shards, replicas,
                          metadata={"index_version": index.version, "chunks": n, "bm25_idf": mode,
                                    "model": index.manifest["model"].get("name")})
        batch: list = []
        for p in _points(index, mode):
            batch.append(p)
            if len(batch) >= UPSERT_BATCH:
                client.upsert(name, points=batch, wait=True)
                batch = []
        if batch:
            client.upsert(name, points=batch, wait=True)
        count = client.count(name, exact=True).count
        if count != n:
            raise QdrantBackendError(f"collection {name} holds {count} points after the upload, expected {n}")
    if activate:
        switch_alias(client, alias, name)
    pruned = prune_collections(client, alias, keep) if prune else []
    return PublishResult(name, alias, n, activate, reused, pruned, round(time.time() - t0, 2))


# -- reading ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryScores:
    """One query's scores from the store (QdrantStore.query_scores)."""

    lex: np.ndarray  # BM25 of every row retrieval reads (float32, ntotal long; rows not needed are 0)
    pool: np.ndarray | None  # the dense pool, sorted (None in lexical mode)
    rows: np.ndarray  # sorted rows with chunk and best-sentence cosines (the pool and the lexical candidates)
    chunk: np.ndarray
    best: np.ndarray

    def dense(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(chunk cosine, best-sentence cosine) of `rows`, each one of `self.rows`."""
        rows = np.asarray(rows, dtype=np.int64)
        at = np.searchsorted(self.rows, rows)
        if rows.size and (at.max() >= self.rows.size or not np.array_equal(self.rows[at], rows)):
            raise KeyError("rows outside the scored candidates")
        return self.chunk[at], self.best[at]


class QueryPlanner:
    """`query_scores`: one query's scores in as few requests as its data dependencies allow. Written against
    a few primitives that QdrantStore (qdrant-client: a server or local mode) and indexer.qdrant_edge.EdgeStore
    (the Rust engine in this process) implement: `_req(using, query, filter, limit, threshold)`,
    `_run(request)`, `_run_batch(requests)` (one request: a batch), `_ids(rows)` and `_filter(allowed_rows)`
    (filters), `_sparse(ids, values)`; attributes `ntotal`, `vocab`."""
    LEXICAL_MARGIN = 32  # BM25 points asked beyond the top needed, to see where the ties with its last one end
    tie_extensions = 0  # BM25 tops whose ties ran past the first request's limit (one more request each)

    def _scoring(self, q: list, sparse, flt, n: int) -> list:
        """Requests scoring the (at most `n`) points `flt` keeps: chunk vector, best sentence (MAX_SIM) and,
        when `sparse` is given, BM25 (a sparse query returns the points sharing a term, the rest score 0)."""
        reqs = [self._req(DENSE, q, flt, n), self._req(SENTENCES, [q], flt, n)]
        if sparse is not None:
            reqs.append(self._req(SPARSE, sparse, flt, n))
        return reqs

    def _lexical_top(self, first: tuple[np.ndarray, np.ndarray], sparse, flt, top: int, limit: int,
                     n_allowed: int) -> tuple[np.ndarray, np.ndarray]:
        """The BM25 top `top` with every row tied with the `top`-th: `first` holds the best `limit` (> top);
        when the `top`-th score equals the last of them, the ties may go on past the limit and one more
        request fetches every point scoring at least the `top`-th (a threshold a hair lower, whether the
        engine keeps scores above or at the threshold: a few more rows with their exact scores are harmless)."""
        rows, scores = first
        if rows.size < limit or top <= 0:
            return rows, scores
        kth = float(np.sort(scores)[::-1][top - 1])
        if float(scores.min()) < kth:
            return rows, scores
        self.tie_extensions += 1
        return self._run(self._req(SPARSE, sparse, flt, int(n_allowed), kth - 1e-6 * max(1.0, abs(kth))))

    def query_scores(self, query_vec: np.ndarray | None, terms: Sequence[str] | None,
                     allowed_rows: np.ndarray | None, pool: int, lexical_top: int,
                     lexical: np.ndarray | None = None) -> QueryScores:
        """What retrieval needs for one query (`service.retrieval.Retriever.search`), in at most two requests:

        - `query_vec` None (lexical mode): the BM25 top `lexical_top` among the allowed rows, one request.
        - at most `pool` allowed rows: all of them are the dense pool; chunk vector, best sentence and BM25 of
          every one in ONE batched request.
        - else request 1 (one batch): the `pool` nearest chunks and the BM25 top `lexical_top` (+ LEXICAL_MARGIN,
          to see where the ties end); request 2 (one batch): chunk vector and best sentence of the pool and of
          the lexical candidates, BM25 of the pool rows outside the lexical top. Request 2 needs the ids
          request 1 returns.

        `lex` holds the exact BM25 score of every row retrieval reads (the pool, the lexical top and its ties;
        the other rows 0): fusion takes each list's top `candidates` and min-max normalizes over the
        candidates only, so these give the same fusion as every chunk's BM25. `lexical` (every row's BM25,
        already computed) replaces the sparse requests. A tie at the end of the BM25 top that runs past
        LEXICAL_MARGIN costs one more request (`tie_extensions`)."""
        if lexical is None and terms and self.vocab is None:
            raise QdrantBackendError("this store has no vocabulary: BM25 queries need the version's bm25s vocab")
        lex = np.zeros(self.ntotal, np.float32) if lexical is None else np.array(lexical, np.float32)
        ids, vals = sparse_query(self.vocab, terms) if lexical is None and terms else ([], [])
        sparse = self._sparse(ids, vals) if ids else None
        n_allowed = self.ntotal if allowed_rows is None else int(len(allowed_rows))
        empty = np.zeros(0, np.int64)
        if n_allowed == 0 or self.ntotal == 0:
            return QueryScores(lex, empty, empty, np.zeros(0, np.float32), np.zeros(0, np.float32))
        flt = self._filter(allowed_rows)
        limit = int(lexical_top + self.LEXICAL_MARGIN)
        if query_vec is None:  # lexical mode: the BM25 top only
            if sparse is not None and lexical_top > 0:
                rows, scores = self._lexical_top(self._run(self._req(SPARSE, sparse, flt, limit)), sparse, flt,
                                                 lexical_top, limit, n_allowed)
                lex[rows] = scores
            return QueryScores(lex, None, empty, np.zeros(0, np.float32), np.zeros(0, np.float32))
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1).tolist()
        if n_allowed <= pool:  # every allowed chunk is a candidate: one request scores them all
            rows = np.arange(self.ntotal, dtype=np.int64) if allowed_rows is None else \
                np.asarray(allowed_rows, dtype=np.int64)
            got = self._run_batch(self._scoring(q, sparse, flt, n_allowed))
            if sparse is not None:
                lex[got[2][0]] = got[2][1]
            return QueryScores(lex, rows, *self._aligned(rows, got[0], got[1]))
        reqs = [self._req(DENSE, q, flt, int(pool))]
        if sparse is not None and lexical_top > 0:
            reqs.append(self._req(SPARSE, sparse, flt, limit))
        got = self._run_batch(reqs)
        pool_rows = np.sort(got[0][0])
        lex_rows = empty
        if len(got) > 1:
            lex_rows, lex_scores = self._lexical_top(got[1], sparse, flt, lexical_top, limit, n_allowed)
            lex[lex_rows] = lex_scores
            kth = np.sort(lex_scores)[::-1][min(lexical_top, lex_scores.size) - 1] if lex_scores.size else 0.0
            lex_rows = lex_rows[lex_scores >= kth]  # the lexical candidates (ties included) need dense scores
        elif lexical is not None and lexical_top > 0:  # BM25 given: its top (ties included) among the allowed rows
            pos = np.flatnonzero(lex > 0) if allowed_rows is None else \
                np.asarray(allowed_rows, dtype=np.int64)[lex[allowed_rows] > 0]
            if pos.size:
                kth = np.partition(lex[pos], max(0, pos.size - lexical_top))[max(0, pos.size - lexical_top)]
                lex_rows = pos[lex[pos] >= kth]
        cand = np.union1d(pool_rows, lex_rows)
        reqs = self._scoring(q, None, self._ids(cand), int(cand.size))
        bm25_missing = np.setdiff1d(pool_rows, lex_rows) if sparse is not None else empty
        if bm25_missing.size:
            reqs.append(self._req(SPARSE, sparse, self._ids(bm25_missing), int(bm25_missing.size)))
        got = self._run_batch(reqs)
        if len(got) > 2:
            lex[got[2][0]] = got[2][1]
        return QueryScores(lex, pool_rows, *self._aligned(cand, got[0], got[1]))

    def _aligned(self, rows: np.ndarray, dense: tuple, best: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows sorted, chunk cosine, best-sentence cosine) from two responses covering `rows`."""
        rows = np.sort(rows)
        out = []
        for r, s in (dense, best):
            order = np.argsort(r)
            if r.size != rows.size or not np.array_equal(r[order], rows):
                raise QdrantBackendError(f"the store scored {r.size} rows, not the {rows.size} asked")
            out.append(s[order].astype(np.float32))
        return rows, out[0], out[1]


class QdrantStore(QueryPlanner):
    """VectorStore over one Qdrant collection (or an alias), plus the scorers retrieval asks a store for when
    it has them: `query_scores` (a whole query in at most two requests, QueryPlanner), and for the callers
    that ask for one of them alone `chunk_and_sentence_scores` (multivector MAX_SIM) and `bm25_scores` (sparse).

    `allowed_rows` filters become a range condition on the row payload (a contiguous run, such as a document)
    or a has-id condition (point id = row). `vocab` maps analyzed terms to sparse indices (the version's
    bm25s vocabulary); without it `bm25_scores` is unavailable."""

    def __init__(self, client, collection: str, dim: int, ntotal: int | None = None,
                 vocab: dict[str, int] | None = None, exact: bool = True, mode: str = "global") -> None:
        from qdrant_client import models

        self._m = models
        self.client = client
        self.collection = collection
        self.dim = int(dim)
        self.ntotal = int(ntotal if ntotal is not None else client.count(collection, exact=True).count)
        self.vocab = vocab
        self.exact = exact
        self.mode = mode
        # local mode always scans exactly (and warns about search params)
        self._params = None if is_local(client) else models.SearchParams(exact=exact)
        self.tie_extensions = 0

    # -- filters
    def _filter(self, allowed_rows: np.ndarray | None):
        m = self._m
        if allowed_rows is None:
            return None
        rows = np.asarray(allowed_rows, dtype=np.int64)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo == rows.size:
            return m.Filter(must=[m.FieldCondition(key="row", range=m.Range(gte=lo, lt=hi))])
        return m.Filter(must=[m.HasIdCondition(has_id=rows.tolist())])

    def payload_filter(self, doc_id: str | None = None, section: str | None = None):
        """The same filters by payload (what a client without the row arrays would send)."""
        m = self._m
        must = []
        if doc_id:
            must.append(m.FieldCondition(key="doc_id", match=m.MatchValue(value=doc_id)))
        if section:
            must.append(m.FieldCondition(key="sections", match=m.MatchValue(value=section)))
        return m.Filter(must=must) if must else None

    # -- VectorStore
    def search(self, query_vec: np.ndarray, k: int, allowed_rows: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        if self.ntotal == 0 or k <= 0 or (allowed_rows is not None and len(allowed_rows) == 0):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1)
        res = self.client.query_points(self.collection, query=q.tolist(), using=DENSE,
                                       query_filter=self._filter(allowed_rows), limit=int(k),
                                       search_params=self._params, with_payload=False)
        rows, scores = unpack_points(res.points)
        order = np.lexsort((rows, -scores))  # ties by row, as FAISS Flat returns them
        return rows[order], scores[order].astype(np.float32)

    def search_filtered(self, query_vec: np.ndarray, k: int, doc_id: str | None = None,
                        section: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dense search filtered by payload (doc_id, section key) instead of rows."""
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1)
        res = self.client.query_points(self.collection, query=q.tolist(), using=DENSE,
                                       query_filter=self.payload_filter(doc_id, section), limit=int(k),
                                       search_params=self._params, with_payload=False)
        rows, scores = unpack_points(res.points)
        return rows, scores.astype(np.float32)

    def fetch(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size == 0:
            return np.zeros((0, self.dim), np.float32)
        uniq = np.unique(rows)
        recs = self.client.retrieve(self.collection, ids=uniq.tolist(), with_payload=False, with_vectors=[DENSE])
        got = {int(r.id): r.vector[DENSE] for r in recs}
        missing = [int(r) for r in uniq if int(r) not in got]
        if missing:
            raise KeyError(f"rows {missing[:5]} are not in collection {self.collection}")
        table = np.asarray([got[int(r)] for r in uniq], dtype=np.float32)
        return table[np.searchsorted(uniq, rows)]

    # -- the scorers retrieval uses when a store has them
    def chunk_and_sentence_scores(self, rows: np.ndarray, query_vec: np.ndarray
                                  ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk cosine, best-sentence cosine) of each of `rows`, in the order given: one batched request,
        a dense query and a MAX_SIM multivector query, both limited to those rows."""
        m = self._m
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        uniq = np.unique(rows)
        q = np.asarray(query_vec, dtype=np.float32).reshape(-1).tolist()
        flt = m.Filter(must=[m.HasIdCondition(has_id=uniq.tolist())])
        reqs = [m.QueryRequest(query=q, using=DENSE, filter=flt, limit=int(uniq.size), params=self._params),
                m.QueryRequest(query=[q], using=SENTENCES, filter=flt, limit=int(uniq.size), params=self._params)]
        dense, best = self.client.query_batch_points(self.collection, requests=reqs)
        out = []
        for resp in (dense, best):
            r, s = unpack_points(resp.points)
            if r.size != uniq.size:
                raise QdrantBackendError(f"collection {self.collection} scored {r.size} of {uniq.size} rows")
            order = np.argsort(r)
            out.append(s[order][np.searchsorted(uniq, rows)].astype(np.float32))
        return out[0], out[1]

    # -- the primitives of QueryPlanner
    def _req(self, using: str, query, flt, limit: int, threshold: float | None = None):
        m = self._m
        return m.QueryRequest(query=query, using=using, filter=flt, limit=int(limit), score_threshold=threshold,
                              params=None if using == SPARSE else self._params)

    def _run(self, req) -> tuple[np.ndarray, np.ndarray]:
        res = self.client.query_points(self.collection, query=req.query, using=req.using, query_filter=req.filter,
                                       limit=req.limit, score_threshold=req.score_threshold,
                                       search_params=req.params, with_payload=False)
        return unpack_points(res.points)

    def _run_batch(self, reqs: list) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rows, scores) of each request of one query_batch_points call."""
        return [unpack_points(r.points) for r in self.client.query_batch_points(self.collection, requests=reqs)]

    def _ids(self, rows: np.ndarray):
        m = self._m
        return m.Filter(must=[m.HasIdCondition(has_id=np.asarray(rows).tolist())])

    def _sparse(self, ids: list[int], values: list[float]):
        return self._m.SparseVector(indices=ids, values=values)


    def bm25_scores(self, terms: Sequence[str], limit: int | None = None) -> np.ndarray:
        """BM25 score of every chunk (float32, zeros where no term matches): a sparse query, every matching
        point returned (`limit`: only the best that many)."""
        if self.vocab is None:
            raise QdrantBackendError("this store has no vocabulary: BM25 queries need the version's bm25s vocab")
        out = np.zeros(self.ntotal, dtype=np.float32)
        ids, vals = sparse_query(self.vocab, terms)
        if not ids:
            return out
        m = self._m
        res = self.client.query_points(self.collection, query=m.SparseVector(indices=ids, values=vals), using=SPARSE,
                                       limit=int(limit or self.ntotal), with_payload=False)
        rows, scores = unpack_points(res.points)
        out[rows] = scores
        return out
