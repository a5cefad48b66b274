"""The vector-index stage: catalog ids and normalized embeddings in, a FAISS index out.

Embeddings are L2-normalized, so cosine similarity is the inner product and every index uses
``METRIC_INNER_PRODUCT``. The index kind follows autofaiss's rules (``choose_kind``): exact
``IndexFlatIP`` for small collections, IVF with an HNSW coarse quantizer above that, with SQ8
or PQ storage when ``max_memory`` asks for it. IVF indexes are tuned at build time: ``nprobe``
is the smallest that reaches ``target_recall`` (recall@10 against exact search).

Index ids are the catalog's int64 ids. Every index can give back a vector by id (IndexIDMap2,
or an IVF hashtable direct map), which is what exact search over a small subset and
incremental removal need.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from clipsearch.base.durable import publishing, write_failure
from clipsearch.errors import ClipsearchError
from clipsearch.store.manifest import VectorIndexInfo

logger = logging.getLogger(__name__)

RANDOM_SEED = 0
KINDS = ("flat", "ivf-flat", "ivf-sq8", "ivf-pq")
RECALL_K = 10
HNSW_M = 32
MIN_EF_SEARCH = 64
# faiss warns below 39 training points per centroid. On clustered embeddings 64 points per
# list and 10 k-means iterations reach the same nprobe and recall as faiss's defaults (256,
# 25) in a small fraction of the time (benchmarks/vector_search.py).
MIN_POINTS_PER_LIST = 39
TRAIN_POINTS_PER_LIST = 64
# Above this many training points (1 GiB of 512-dim vectors; reached at ~2M vectors) each list
# gets fewer, down to MIN_POINTS_PER_LIST: the sample is held whole while k-means runs.
MAX_TRAIN_POINTS = 2**19
KMEANS_ITERATIONS = 10
TUNE_QUERIES = 500
# Each id costs its int64 plus a hashtable entry (IndexIDMap2's reverse map or the IVF direct
# map), whatever the storage.
ID_BYTES = 48
# PQ sub-vectors wider than this lose too much to be worth building.
MAX_PQ_SUBVECTOR_DIM = 32
MAX_PQ_M = 64
PQ_NBITS = 8
# Up to this many allowed ids, exact search over their reconstructed vectors beats scanning.
SMALL_SUBSET = 20_000
# A bitmap id filter is used while the largest id is below this many per allowed id.
BITMAP_IDS_PER_ALLOWED = 32
# Re-tune after an incremental update only while exhaustive ground truth costs at most this
# many multiply-adds (about a second on two cores).
RETUNE_BUDGET = 10_000_000_000
MIN_RETUNE_QUERIES = 100
# Tuning stops when two doublings of nprobe (four times the scan) gain less recall@10 than
# this: SQ8 and PQ codes cap recall (10M x 512 SQ8: 0.9205 at nprobe 2, 4 and 8, 0.921 at 16).
PLATEAU_GAIN = 0.01


@dataclass(frozen=True)
class VectorIndexConfig:
    """How to build a vector index; the defaults suit collections up to tens of millions."""

    flat_threshold: int = 100_000
    max_memory: int | None = None
    target_recall: float = 0.95
    use_gpu: bool | None = None


# -- choosing ----------------------------------------------------------------------------


def nlist_for(n: int) -> int:
    """IVF list count: about 4·√n, a multiple of 8, with enough training points per list."""
    nlist = max(8, round(4 * math.sqrt(n) / 8) * 8)
    return max(1, min(nlist, n // MIN_POINTS_PER_LIST))


def estimate_bytes(n: int, dim: int, code_bytes: int, nlist: int = 0) -> int:
    """Rough resident size of an index: codes and ids, plus the HNSW quantizer for IVF."""
    quantizer = nlist * (dim * 4 + HNSW_M * 2 * 4)
    return n * (code_bytes + ID_BYTES) + quantizer


def choose_kind(n: int, dim: int, config: VectorIndexConfig) -> tuple[str, dict]:
    """The index kind and its build parameters for ``n`` vectors of ``dim`` (autofaiss rules)."""
    budget = config.max_memory

    def fits(code_bytes: int, nlist: int = 0) -> bool:
        return budget is None or estimate_bytes(n, dim, code_bytes, nlist) <= budget

    if n <= config.flat_threshold and fits(dim * 4):
        return "flat", {}
    nlist = nlist_for(n)
    params: dict = {"nlist": nlist, "quantizer": f"hnsw{HNSW_M}"}
    if fits(dim * 4, nlist):
        return "ivf-flat", params
    if fits(dim, nlist):
        return "ivf-sq8", params
    pq_ms = [
        m
        for m in range(min(MAX_PQ_M, dim), 0, -1)
        if dim % m == 0 and dim // m <= MAX_PQ_SUBVECTOR_DIM
    ]
    for m in pq_ms:
        if fits(m, nlist):
            # PQ trains 2^8 centroids per sub-quantizer; fewer points than that cannot.
            if n < 2**PQ_NBITS:
                break
            return "ivf-pq", {**params, "m": m}
    need = estimate_bytes(n, dim, pq_ms[-1] if pq_ms else dim, nlist)
    raise ClipsearchError(
        f"a vector index of {n:,} vectors ({dim} dims) needs at least {_mib(need)}, "
        f"more than max_memory ({_mib(budget or 0)}); raise max_memory"
    )


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


# -- building ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorSource:
    """Vectors to build from, read in chunks, so that a build never holds them all: ``chunks()``
    starts a new pass over every (ids, vectors) pair, in the same order each time."""

    count: int
    dim: int
    chunks: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]

    @classmethod
    def of_arrays(cls, ids: np.ndarray, vectors: np.ndarray) -> VectorSource:
        ids, vectors = _check_pairs(ids, vectors)
        return cls(len(ids), vectors.shape[1], lambda: iter([(ids, vectors)]))


def build(
    ids: np.ndarray, vectors: np.ndarray, config: VectorIndexConfig | None = None
) -> tuple[faiss.Index, VectorIndexInfo]:
    """Build, train and tune an index over ``vectors`` (n, d), searchable by ``ids`` (n,)."""
    return build_from(VectorSource.of_arrays(ids, vectors), config)


def build_from(
    source: VectorSource, config: VectorIndexConfig | None = None
) -> tuple[faiss.Index, VectorIndexInfo]:
    """Build, train and tune an index over the vectors of ``source`` in passes over its
    chunks: one gathers the training sample, one assigns every vector to its list (so each
    list is allocated once, at its size), one adds them (and scores the tuning queries
    exactly). Memory holds the index, the sample and one chunk, never all vectors."""
    config = config or VectorIndexConfig()
    n, dim = source.count, source.dim
    kind, params = choose_kind(n, dim, config)
    if kind == "flat":
        flat = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        for ids, vectors in _checked_chunks(source):
            flat.add_with_ids(vectors, ids)
        return flat, VectorIndexInfo(kind, flat.ntotal, dim, params, 1.0, "cpu")

    on_gpu = _gpu_wanted(config)
    index = _new_ivf(kind, dim, params)
    start = time.perf_counter()
    size = max(
        MIN_POINTS_PER_LIST * index.nlist,
        min(TRAIN_POINTS_PER_LIST * index.nlist, MAX_TRAIN_POINTS),
    )
    # The tuning queries are drawn with the training sample but kept out of the training
    # and, until tuned, out of the index: fresh to both, as a user's queries are. (Queries
    # that trained the centroids found their lists more easily: tuned at 0.91 recall@10,
    # fresh queries got 0.88, at 10M.) A tenth of the vectors at most.
    held_out = min(TUNE_QUERIES, n // 10)
    sample_ids, sample = _sample(source, min(n, size + held_out))
    rng = np.random.default_rng(RANDOM_SEED)
    is_query = np.zeros(len(sample), bool)
    is_query[rng.choice(len(sample), held_out, replace=False)] = True
    queries, query_ids = sample[is_query], sample_ids[is_query]
    _train(index, sample[~is_query], on_gpu)
    del sample
    trained = time.perf_counter()
    # The queries' exact neighbours are found chunk by chunk as the chunks are added.
    assignments = _assign_and_reserve(index, source)
    nearest = RunningTopK(len(queries), RECALL_K)
    held_lists = np.empty(len(query_ids), np.int64)
    by_id = np.argsort(query_ids)
    row = 0
    for ids, vectors in _checked_chunks(source):
        lists = assignments[row : row + len(ids)]
        row += len(ids)
        held = np.isin(ids, query_ids)
        if held.any():
            held_lists[by_id[np.searchsorted(query_ids[by_id], ids[held])]] = lists[held]
            ids, vectors, lists = ids[~held], vectors[~held], lists[~held]
        _add(index, ids, vectors, lists)
        if n > RECALL_K and len(ids):
            nearest.merge(*exact_top_k(queries, vectors, RECALL_K), ids)
    added = time.perf_counter()
    params["trained_count"] = n
    info = VectorIndexInfo(kind, n, dim, params, None, "gpu" if on_gpu else "cpu")
    if n <= RECALL_K:
        _set_nprobe(info, info.params["nlist"], None, n)
    else:
        _tune(index, info, queries, query_ids, nearest.ids, config.target_recall)
    _add(index, query_ids, queries, held_lists)
    info.params["tuned_count"] = index.ntotal  # tuned for all of them, held-out ones included
    if index.ntotal != n:
        raise ValueError(f"the source promised {n} vectors and gave {index.ntotal}")
    logger.info(
        "built %s over %d vectors: train %.1f s, add %.1f s, tune %.1f s",
        kind,
        n,
        trained - start,
        added - trained,
        time.perf_counter() - added,
    )
    return index, info


def _add(index: faiss.IndexIVF, ids: np.ndarray, vectors: np.ndarray, lists: np.ndarray) -> None:
    """Add vectors to the lists already chosen for them."""
    if len(ids):
        ids, lists = np.ascontiguousarray(ids), np.ascontiguousarray(lists)
        vectors = np.ascontiguousarray(vectors)
        index.add_core(
            len(ids), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(lists)
        )


def _assign_and_reserve(index: faiss.IndexIVF, source: VectorSource) -> np.ndarray:
    """The inverted list of every vector, in source order; each list is then reserved at its
    final size. Lists grown one add at a time double their capacity, so they hold up to
    twice their codes: 10M x 512 in SQ8 peaked at 7.1 GB for an index of 5.2."""
    assignments = np.empty(source.count, np.int64)
    row = 0
    for _, vectors in _checked_chunks(source):
        if row + len(vectors) > source.count:
            raise ValueError(f"the source promised {source.count} vectors and gave more")
        assignments[row : row + len(vectors)] = index.quantizer.assign(vectors, 1).ravel()
        row += len(vectors)
    if row != source.count:
        raise ValueError(f"the source promised {source.count} vectors and gave {row}")
    invlists = index.invlists
    assert invlists is not None  # an IVF index has its lists
    for list_no, size in enumerate(np.bincount(assignments, minlength=index.nlist).tolist()):
        if size:
            invlists.resize(list_no, size)  # allocates exactly ...
            invlists.resize(list_no, 0)  # ... and keeps the capacity
    return assignments


def _checked_chunks(source: VectorSource) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for ids, vectors in source.chunks():
        if len(ids):
            yield _check_pairs(ids, vectors, source.dim)


def _sample(source: VectorSource, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` of the source's vectors, drawn uniformly (positions chosen up front)."""
    rng = np.random.default_rng(RANDOM_SEED)
    n = source.count
    wanted = np.arange(n) if size >= n else np.sort(rng.choice(n, size, replace=False))
    sample = np.empty((len(wanted), source.dim), np.float32)
    sample_ids = np.empty(len(wanted), np.int64)
    start = taken = 0
    for ids, vectors in _checked_chunks(source):
        end = start + len(ids)
        hi = int(np.searchsorted(wanted, end))
        rows = wanted[taken:hi] - start
        sample[taken:hi], sample_ids[taken:hi] = vectors[rows], ids[rows]
        taken, start = hi, end
        if taken == len(wanted):
            break
    if taken != len(wanted):
        raise ValueError(f"the source promised {n} vectors and gave {start}")
    return sample_ids, sample


def exact_top_k(queries: np.ndarray, stored: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``stored`` with the highest inner product with each query, best
    first: (scores, row positions), each (queries, min(k, rows)); equal scores in row order.
    faiss, not numpy, multiplies: BLAS threads would fight faiss's still-spinning OpenMP
    threads."""
    k = min(k, len(stored))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    stored = np.ascontiguousarray(stored, np.float32)
    scores, rows = faiss.knn(queries, stored, k, metric=faiss.METRIC_INNER_PRODUCT)
    order = np.lexsort((rows, -scores), axis=1)  # ties in row order, whatever faiss returned
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


class RunningTopK:
    """The best k (score, id) per query over chunks searched one after another: exact
    search over more vectors than fit in memory at once."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = k
        self.scores = np.full((n_queries, 0), -np.inf, np.float32)
        self.ids = np.full((n_queries, 0), -1, np.int64)

    def merge(self, scores: np.ndarray, positions: np.ndarray, chunk_ids: np.ndarray) -> None:
        scores = np.concatenate([self.scores, scores], axis=1)
        ids = np.concatenate([self.ids, chunk_ids[positions]], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.ids = np.take_along_axis(ids, order, axis=1)


def _check_pairs(
    ids: np.ndarray, vectors: np.ndarray, dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if dim is not None and not len(ids) and not vectors.size:
        vectors = vectors.reshape(0, dim)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"expected {len(ids)} vectors as a 2-D array, got shape {vectors.shape}")
    if dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"expected vectors of dim {dim}, got {vectors.shape[1]}")
    if len(ids) and ids.min() < 0:
        raise ValueError("vector ids must be non-negative (faiss uses -1 for 'no result')")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("vector ids must be unique")
    return ids, vectors


def _gpu_wanted(config: VectorIndexConfig) -> bool:
    if config.use_gpu is False:
        return False
    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if config.use_gpu and not available:
        raise ClipsearchError(
            "use_gpu is set but this faiss has no GPU support; install faiss-gpu or unset it"
        )
    return available


def _new_ivf(kind: str, dim: int, params: dict) -> faiss.IndexIVF:
    metric = faiss.METRIC_INNER_PRODUCT
    nlist = params["nlist"]
    quantizer = faiss.IndexHNSWFlat(dim, HNSW_M, metric)
    index: faiss.IndexIVF
    if kind == "ivf-flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
    elif kind == "ivf-sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, metric
        )
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, params["m"], PQ_NBITS, metric)
    # Centroids of unit vectors compared by inner product should be unit vectors too.
    index.cp.spherical = True
    index.cp.niter = KMEANS_ITERATIONS
    # Reconstruct-by-id and remove_ids need a map from arbitrary int64 ids to list slots.
    # faiss's type stubs lack DirectMap.
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    return index


def _train(index: faiss.IndexIVF, sample: np.ndarray, on_gpu: bool) -> None:
    gpu_flat = None
    if on_gpu:
        # k-means is nearly all of the build time; its assignments run on a GPU flat index
        # while the index itself (HNSW quantizer, direct map) stays a CPU index.
        gpu_flat = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(index.d))
        index.clustering_index = gpu_flat
        # SWIG's setattr took ownership; Python must still free it (the stubs lack thisown).
        gpu_flat.thisown = True  # type: ignore[attr-defined]
    try:
        index.train(sample)
    finally:
        if gpu_flat is not None:
            # A null pointer, which the stubs do not allow.
            index.clustering_index = None  # type: ignore[assignment]


# -- tuning ------------------------------------------------------------------------------


def _tune(
    index: faiss.IndexIVF,
    info: VectorIndexInfo,
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    target: float,
) -> None:
    """Set the smallest nprobe whose recall@10 reaches ``target``.

    Queries are database vectors; each one's own id is dropped from both result lists
    (leave-one-out), so they behave like fresh queries from the same distribution.
    """
    nlist = info.params["nlist"]
    tried: list[tuple[int, float]] = []
    for nprobe in _nprobe_ladder(nlist):
        _, found = index.search(queries, RECALL_K + 1, params=_ivf_params(nprobe))
        recall = _recall(_drop_self(found, query_ids), truth)
        tried.append((nprobe, recall))
        if recall >= target:
            break
        if len(tried) >= 3 and recall - tried[-3][1] < PLATEAU_GAIN:
            # The codes cap recall below the target, and every further step scans twice as
            # many lists (at 10M vectors the ladder up to nlist took minutes).
            break
    # Reached, or the best short of an unreachable target (the plateau's end): the
    # smallest nprobe with the highest recall tried.
    nprobe, recall = tried[-1] if tried[-1][1] >= target else max(tried, key=lambda t: t[1])
    _set_nprobe(info, nprobe, recall, index.ntotal)
    logger.info("tuned %s: nprobe %d, recall@10 %.3f", info.kind, nprobe, recall)


def _nprobe_ladder(nlist: int) -> list[int]:
    ladder = [2**i for i in range(nlist.bit_length()) if 2**i < nlist]
    return [*ladder, nlist]


def _set_nprobe(info: VectorIndexInfo, nprobe: int, recall: float | None, count: int) -> None:
    info.params.update(nprobe=nprobe, ef_search=_ef_search(nprobe), tuned_count=count)
    info.recall_at_10 = None if recall is None else round(float(recall), 4)


def _ef_search(nprobe: int) -> int:
    # HNSW needs ef >= k to return k centroids, and more to find the true nearest ones: at
    # ten million vectors a small ef capped recall@10 whatever the nprobe, while 64 reached
    # the codes' own cap for a fraction of a millisecond (benchmarks/RESULTS.md, 10M).
    return max(MIN_EF_SEARCH, 2 * nprobe)


def _drop_self(found: np.ndarray, self_ids: np.ndarray) -> np.ndarray:
    """The first RECALL_K ids of each row, skipping the query's own id."""
    keep = found != self_ids[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :RECALL_K]
    return np.take_along_axis(found, order, axis=1)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2) & (found >= 0)
    return float(hits.sum()) / truth.size


# -- updating ----------------------------------------------------------------------------


def update(
    index: faiss.Index,
    info: VectorIndexInfo,
    *,
    remove_ids: np.ndarray,
    added: VectorSource,
    everything: VectorSource,
    config: VectorIndexConfig | None = None,
) -> tuple[faiss.Index, VectorIndexInfo]:
    """Apply removals and the vectors of ``added`` in place, or rebuild when the index no
    longer fits them.

    An added id replaces any vector already stored under it. The index is changed in place;
    when a rebuild is needed, it is built from ``everything`` (every vector after the update)
    and a new index is returned (discard the old one). ``added`` is read in chunks, twice
    (its ids first), never held whole.
    """
    config = config or VectorIndexConfig()
    if added.count and added.dim != info.dim:
        raise ValueError(f"vectors have dimension {added.dim}, the index {info.dim}")
    add_ids = [ids for ids, _ in _checked_chunks(added)]
    remove_ids = np.asarray(remove_ids, dtype=np.int64).reshape(-1)
    gone = np.unique(np.concatenate([remove_ids, *add_ids]))
    removed = _remove(index, info, gone) if len(gone) and index.ntotal else 0
    new_count = index.ntotal + added.count
    if not _fits_update(info, new_count, removed + added.count, config):
        logger.info("rebuilding the vector index for %d vectors", new_count)
        return build_from(everything, config)
    for ids, vectors in _checked_chunks(added):
        index.add_with_ids(vectors, ids)
    if index.ntotal != new_count:
        raise ValueError(f"the source promised {added.count} vectors and gave another number")
    info = dataclasses.replace(info, count=index.ntotal, params=dict(info.params))
    if info.kind == "ivf-flat" and removed + added.count:
        _retune_if_cheap(_ivf(index), info, config.target_recall)
    return index, info


def _remove(index: faiss.Index, info: VectorIndexInfo, gone: np.ndarray) -> int:
    if info.kind == "flat":
        return index.remove_ids(faiss.IDSelectorBatch(gone))
    # The hashtable direct map removes an IDSelectorArray id by id instead of scanning.
    return index.remove_ids(faiss.IDSelectorArray(gone))


def _fits_update(
    info: VectorIndexInfo, new_count: int, changes: int, config: VectorIndexConfig
) -> bool:
    kind, params = choose_kind(new_count, info.dim, config)
    if kind != info.kind or params.get("m") != info.params.get("m"):
        return False
    if kind == "flat":
        return True
    # Lists trained on a much smaller or different set would grow unbalanced.
    trained = info.params.get("trained_count", 0)
    return new_count <= 2 * trained and changes < 0.5 * max(info.count, 1)


def _retune_if_cheap(index: faiss.IndexIVF, info: VectorIndexInfo, target: float) -> None:
    """Re-tune nprobe against exhaustive search (exact for ivf-flat) when that is cheap."""
    n = index.ntotal
    n_queries = min(TUNE_QUERIES, RETUNE_BUDGET // max(1, n * info.dim), n)
    if n_queries < MIN_RETUNE_QUERIES or n <= RECALL_K:
        return
    rng = np.random.default_rng(RANDOM_SEED)
    query_ids = np.sort(rng.choice(_stored_ids(index), n_queries, replace=False))
    queries = index.reconstruct_batch(query_ids)
    _, found = _exhaustive(index, info, queries, RECALL_K + 1, None)
    _tune(index, info, queries, query_ids, _drop_self(found, query_ids), target)


def _stored_ids(index: faiss.IndexIVF) -> np.ndarray:
    invlists = index.invlists
    assert invlists is not None  # an IVF index has its lists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(index.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


# -- saving ------------------------------------------------------------------------------


def save(index: faiss.Index, path: str | os.PathLike) -> None:
    """Write ``index`` to ``path`` atomically: a reader sees the old file or the new one."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with publishing(tmp, path):
            faiss.write_index(index, tmp)
    except (OSError, RuntimeError) as e:
        raise ClipsearchError(f"cannot write the vector index {path}: {write_failure(e)}") from e


def load(path: str | os.PathLike, mmap: bool = False) -> faiss.Index:
    """Read an index written by ``save``; ``mmap`` maps its vectors instead of reading them
    into memory (read-only: for searching), so a process that searches a large index stays
    small and starts at once. A file that a commit moves away while it is read raises
    FileNotFoundError (readers then look for it again), as does one absent when the read
    starts (it may have moved between finding it and reading it), not the "damaged" error."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no vector index at {path}")
    try:
        # IO_FLAG_MMAP_IFC maps the vectors of flat indexes and the inverted lists of IVF
        # ones alike (a few MiB resident instead of the whole index: benchmarks/RESULTS.md,
        # cold query); such an index cannot be changed, so writers read it whole.
        return faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except RuntimeError as e:
        if not os.path.isfile(path):  # moved away by a commit while we read: not damage
            raise FileNotFoundError(path) from None
        raise ClipsearchError(
            f"cannot read the vector index {path} (damaged, or from a newer faiss?); rebuild it"
        ) from e


# -- searching ---------------------------------------------------------------------------


def search(
    index: faiss.Index,
    info: VectorIndexInfo,
    queries: np.ndarray,
    k: int,
    allowed_ids: np.ndarray | None = None,
    min_score: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` (scores, ids) per query, best first, optionally only among ``allowed_ids``.

    Returns float32 and int64 arrays of shape (q, k') with k' = min(k, vectors available);
    there is never -1 padding. With ``min_score`` (one query only) hits scoring less are
    dropped, so k' may be smaller, or 0.
    """
    if min_score is not None:
        scores, ids = search(index, info, queries, k, allowed_ids)
        if len(scores) != 1:
            raise ValueError("min_score needs a single query")
        kept = scores[0] >= min_score
        return scores[:, kept], ids[:, kept]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries.reshape(1, -1)
    if queries.shape[1] != info.dim:
        raise ValueError(f"expected queries of dim {info.dim}, got {queries.shape[1]}")
    if allowed_ids is None:
        if k <= 0 or not index.ntotal or not len(queries):
            return _empty(len(queries))
        return _search_all(index, info, queries, k)
    allowed = _sorted_unique(np.asarray(allowed_ids, dtype=np.int64).reshape(-1))
    if k <= 0 or not allowed.size or not index.ntotal or not len(queries):
        return _empty(len(queries))
    if allowed.size <= SMALL_SUBSET:
        try:
            vectors = index.reconstruct_batch(allowed)
        except RuntimeError:  # some allowed ids are not in the index
            return _trim(*_exhaustive(index, info, queries, min(k, allowed.size), allowed))
        scores, rows = exact_top_k(queries, vectors, k)
        return scores, allowed[rows]
    return _search_selected(index, info, queries, k, allowed)


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    # np.unique hashes; a sort is several times faster on the (usually sorted) id lists.
    ids = np.sort(ids)
    return ids[np.concatenate(([True], ids[1:] != ids[:-1]))] if len(ids) else ids


def _selector(allowed: np.ndarray) -> faiss.IDSelector:
    """A faiss id filter for sorted, unique ``allowed``: a bitmap when ids are dense enough."""
    if allowed[0] >= 0 and allowed[-1] < BITMAP_IDS_PER_ALLOWED * len(allowed):
        # Catalog ids are handed out in sequence, so this is the usual case, and building it
        # is ~50x cheaper than IDSelectorBatch's hash set.
        bits = np.zeros(int(allowed[-1]) + 1, dtype=bool)
        bits[allowed] = True
        # faiss's wrapper takes the bitmap alone (its stubs want its length too).
        bitmap = np.packbits(bits, bitorder="little")
        return faiss.IDSelectorBitmap(bitmap)  # type: ignore[call-arg, arg-type]
    return faiss.IDSelectorBatch(allowed)


def _empty(n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty((n_queries, 0), np.float32), np.empty((n_queries, 0), np.int64)


def _ivf_params(nprobe: int, sel: faiss.IDSelector | None = None) -> faiss.SearchParametersIVF:
    # faiss's stubs lack SearchParametersHNSW and the keyword arguments faiss's wrapper gives
    # every SearchParameters class (it keeps a reference to hnsw for the C++ side).
    ef_search = _ef_search(nprobe)
    hnsw = faiss.SearchParametersHNSW(efSearch=ef_search)  # type: ignore[attr-defined]
    params = faiss.SearchParametersIVF(  # type: ignore[call-arg]
        nprobe=nprobe, quantizer_params=hnsw
    )
    if sel is not None:
        params.sel = sel
    return params


def _search_all(
    index: faiss.Index, info: VectorIndexInfo, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, index.ntotal)
    if info.kind == "flat":
        # faiss scans for a single query on one thread; a BLAS matmul uses every core.
        n = index.ntotal
        assert isinstance(index, faiss.IndexIDMap2)  # what build makes for "flat"
        storage = faiss.downcast_index(index.index)
        assert isinstance(storage, faiss.IndexFlat)
        stored = faiss.rev_swig_ptr(storage.get_xb(), n * info.dim).reshape(n, info.dim)
        ids = faiss.rev_swig_ptr(index.id_map.data(), n)
        # Batches go in slices so the score matrix stays near 64 MiB.
        step = max(1, 2**24 // n)
        parts = [
            _matmul_top_k(queries[i : i + step], ids, stored, k)
            for i in range(0, len(queries), step)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    _parallel_for(_ivf(index), len(queries))
    scores, ids = index.search(queries, k, params=_ivf_params(info.params["nprobe"]))
    # The probed lists can hold fewer than k vectors; those queries get every list.
    short = ids[:, -1] < 0
    if short.any():
        scores[short], ids[short] = _exhaustive(index, info, queries[short], k, None)
    return _trim(scores, ids)


def _ivf(index: faiss.Index) -> faiss.IndexIVF:
    """An index of an ``ivf-*`` kind, typed as one: build and read_index give the concrete
    class (IndexIVFFlat, IndexIVFScalarQuantizer, IndexIVFPQ), typed as any faiss.Index."""
    assert isinstance(index, faiss.IndexIVF), type(index)
    return index


def _parallel_for(index: faiss.IndexIVF, n_queries: int) -> None:
    """Spread a few queries' probed lists over the threads, many queries over the threads:
    one query at 10M vectors, 128 probes, 2 cores: 3.9 → 2.2 ms."""
    index.parallel_mode = 1 if n_queries < faiss.omp_get_max_threads() else 0


def _search_selected(
    index: faiss.Index, info: VectorIndexInfo, queries: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, allowed.size)
    if info.kind == "flat":
        return _trim(*_exhaustive(index, info, queries, k, allowed))
    # Scan about as many allowed vectors as an unfiltered search would: the subset's
    # nearest neighbours lie further out, in proportionally more lists.
    nlist = info.params["nlist"]
    fraction = allowed.size / max(1, index.ntotal)
    nprobe = min(nlist, math.ceil(info.params["nprobe"] / fraction))
    if nprobe >= nlist:
        return _trim(*_exhaustive(index, info, queries, k, allowed))
    sel = _selector(allowed)
    _parallel_for(_ivf(index), len(queries))
    scores, ids = index.search(queries, k, params=_ivf_params(nprobe, sel))
    short = ids[:, -1] < 0
    if short.any():
        scores[short], ids[short] = _exhaustive(index, info, queries[short], k, allowed)
    return _trim(scores, ids)


def _exhaustive(
    index: faiss.Index,
    info: VectorIndexInfo,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scan every stored vector (only ``allowed`` ones, if given): exact up to the codes."""
    sel = None if allowed is None else _selector(allowed)
    if info.kind == "flat":
        params: faiss.SearchParameters | None = None
        if sel is not None:
            # faiss's stubs lack the keyword arguments of its SearchParameters wrapper.
            params = faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]
        return index.search(queries, k, params=params)
    ivf = _ivf(index)
    nlist = ivf.nlist
    centroids = ivf.quantizer.reconstruct_n(0, nlist)
    # Residual codes (SQ8, PQ) add the query-centroid product to each score.
    coarse = np.ascontiguousarray(queries @ centroids.T, dtype=np.float32)
    lists = np.ascontiguousarray(np.broadcast_to(np.arange(nlist, dtype=np.int64), coarse.shape))
    ivf_params = faiss.SearchParametersIVF(nprobe=nlist)  # type: ignore[call-arg]  # as above
    if sel is not None:
        ivf_params.sel = sel
    n = len(queries)
    scores = np.empty((n, k), np.float32)
    ids = np.empty((n, k), np.int64)
    ptr = faiss.swig_ptr
    # The stubs lack SWIG's raw-pointer form of search_preassigned.
    ivf.search_preassigned_c(  # type: ignore[attr-defined]
        n, ptr(queries), k, ptr(lists), ptr(coarse), ptr(scores), ptr(ids), False, ivf_params
    )
    return scores, ids


def _matmul_top_k(
    queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    if k < len(ids):
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(len(ids)), scores.shape)
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return np.take_along_axis(top_scores, order, axis=1).astype(np.float32), ids[top]


def _trim(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop trailing columns of -1 padding (sorted results put it last)."""
    valid = (ids >= 0).sum(axis=1)
    width = int(valid.min()) if len(valid) else 0
    return scores[:, :width], ids[:, :width]
