"""The vector-index stage with real FAISS on small clustered unit vectors (no mocks)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from clipsearch.errors import ClipsearchError
from clipsearch.store import vectors
from clipsearch.store.vectors import VectorIndexConfig, choose_kind, estimate_bytes, nlist_for

DIM = 64
N = 6000
# A small threshold sends a few thousand vectors down the IVF path.
IVF = VectorIndexConfig(flat_threshold=1000)


def clustered(n: int, seed: int, centers: int = 50, noise: float = 0.6) -> np.ndarray:
    """Unit vectors around fixed random centers; ``seed`` picks the points, not the centers."""
    middles = np.random.default_rng(1234).standard_normal((centers, DIM))
    middles /= np.linalg.norm(middles, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = middles[rng.integers(centers, size=n)] + noise * rng.standard_normal((n, DIM)) / 8
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_ids(n: int, seed: int = 0) -> np.ndarray:
    """Distinct, non-sequential, large int64 ids, as a catalog might hand out."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.unique(rng.integers(1, 2**62, n + 16))[:n]).astype(np.int64)


def brute(queries, ids, vecs, k):
    """Exact top-k by numpy: (scores, ids), best first."""
    scores = queries @ vecs.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """On a shared two-core box, OpenMP barriers waiting on a descheduled thread made these
    small builds ten times slower; one thread keeps the file fast whatever else runs."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return random_ids(N), clustered(N, seed=1)


@pytest.fixture(scope="module")
def queries():
    return clustered(200, seed=99)


@pytest.fixture(scope="module")
def flat(data):
    ids, vecs = data[0][:800], data[1][:800]
    return (ids, vecs, *vectors.build(ids, vecs))


@pytest.fixture(scope="module")
def ivf(data):
    return (*data, *vectors.build(*data, IVF))


@pytest.fixture(scope="module")
def ivf_dense(data):
    """Ids 0..N-1, as the catalog hands them out: filters become bitmaps."""
    ids = np.arange(N, dtype=np.int64)
    return (ids, data[1], *vectors.build(ids, data[1], IVF))


# -- choose_kind -------------------------------------------------------------------------


def test_flat_up_to_the_threshold_ivf_flat_above():
    assert choose_kind(100_000, 512, VectorIndexConfig()) == ("flat", {})
    kind, params = choose_kind(100_001, 512, VectorIndexConfig())
    assert kind == "ivf-flat"
    assert params == {"nlist": 1264, "quantizer": "hnsw32"}
    assert choose_kind(1_000_000, 512, VectorIndexConfig())[1]["nlist"] == 4000


def test_nlist_is_about_four_root_n_with_enough_points_per_list():
    assert nlist_for(1_000_000) == 4000
    assert nlist_for(10_000_000) == 12648
    for n in [1, 10, 38, 39, 100, 1000, 10_000, 123_457, 10**6, 10**8]:
        nlist = nlist_for(n)
        assert nlist >= 1
        assert nlist == 1 or n / nlist >= 39
        assert nlist <= max(8, round(4 * n**0.5 / 8) * 8)
    big = [nlist_for(n) for n in (50_000, 123_457, 10**6)]
    assert all(nlist % 8 == 0 for nlist in big)


def test_max_memory_picks_sq8_then_the_largest_pq_that_fits():
    n, d = 1_000_000, 512
    nlist = nlist_for(n)

    def kind_for(budget):
        return choose_kind(n, d, VectorIndexConfig(max_memory=budget))

    assert kind_for(estimate_bytes(n, d, d * 4, nlist))[0] == "ivf-flat"
    assert kind_for(estimate_bytes(n, d, d * 4, nlist) - 1)[0] == "ivf-sq8"
    assert kind_for(estimate_bytes(n, d, d, nlist))[0] == "ivf-sq8"
    kind, params = kind_for(estimate_bytes(n, d, d, nlist) - 1)
    assert (kind, params["m"], params["nlist"]) == ("ivf-pq", 64, nlist)
    assert kind_for(estimate_bytes(n, d, 40, nlist))[1]["m"] == 32
    assert kind_for(estimate_bytes(n, d, 16, nlist))[1]["m"] == 16


def test_max_memory_applies_below_the_flat_threshold():
    n, d = 50_000, 512
    budget = estimate_bytes(n, d, d * 4) // 2
    kind, params = choose_kind(n, d, VectorIndexConfig(max_memory=budget))
    assert kind == "ivf-sq8" and params["nlist"] == nlist_for(n)


def test_nothing_fits_names_the_memory_needed():
    with pytest.raises(ClipsearchError, match=r"needs at least [\d,.]+ MiB.*raise max_memory"):
        choose_kind(1_000_000, 512, VectorIndexConfig(max_memory=10 * 2**20))
    # PQ needs 256 training points per sub-quantizer; fewer vectors than that cannot use it.
    tight = VectorIndexConfig(max_memory=estimate_bytes(200, 64, 32, nlist_for(200)))
    with pytest.raises(ClipsearchError, match="max_memory"):
        choose_kind(200, 64, tight)


# -- build and search --------------------------------------------------------------------


def test_flat_search_equals_numpy_brute_force(flat, queries):
    ids, vecs, index, info = flat
    assert (info.kind, info.count, info.dim, info.recall_at_10) == ("flat", 800, DIM, 1.0)
    scores, found = vectors.search(index, info, queries, 10)
    want_scores, want_ids = brute(queries, ids, vecs, 10)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    assert found.shape == (len(queries), 10)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_flat_search_of_a_large_batch_goes_in_slices(data):
    ids, vecs = data
    index, info = vectors.build(ids, vecs)
    many = clustered(3000, seed=98)  # 3000 x 6000 scores: more than one 64 MiB slice
    scores, found = vectors.search(index, info, many, 5)
    want_scores, want_ids = brute(many, ids, vecs, 5)
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_ivf_reaches_target_recall_on_fresh_queries(ivf, queries):
    ids, vecs, index, info = ivf
    assert info.kind == "ivf-flat" and info.count == N and info.built_on == "cpu"
    assert info.params["nlist"] == nlist_for(N) and info.params["quantizer"] == "hnsw32"
    assert 1 <= info.params["nprobe"] <= info.params["nlist"]
    assert info.recall_at_10 >= 0.95
    scores, found = vectors.search(index, info, queries, 10)
    assert recall(found, brute(queries, ids, vecs, 10)[1]) >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_results_carry_the_given_ids(ivf):
    ids, vecs, index, info = ivf
    scores, found = vectors.search(index, info, vecs[:50], 1)
    np.testing.assert_array_equal(found[:, 0], ids[:50])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_k_beyond_the_count_returns_everything_without_padding(flat, ivf, queries):
    tiny_ids, tiny_vecs = np.array([7, 3, 11]), clustered(3, seed=5)
    index, info = vectors.build(tiny_ids, tiny_vecs)
    scores, found = vectors.search(index, info, queries[:4], 10)
    assert found.shape == scores.shape == (4, 3)
    assert all(sorted(row) == [3, 7, 11] for row in found.tolist())

    ids, vecs, index, info = ivf
    scores, found = vectors.search(index, info, queries[:2], N + 500)
    assert found.shape == (2, N)
    assert (found >= 0).all() and all(len(set(row)) == N for row in found.tolist())
    np.testing.assert_allclose(scores, brute(queries[:2], ids, vecs, N)[0], atol=1e-5)


def test_empty_index_and_zero_k(queries):
    index, info = vectors.build(np.empty(0, np.int64), np.empty((0, DIM), np.float32))
    assert info.count == 0
    for k, allowed in [(5, None), (5, np.array([1, 2]))]:
        scores, found = vectors.search(index, info, queries[:3], k, allowed)
        assert scores.shape == found.shape == (3, 0)
    _, found = vectors.search(*vectors.build(np.array([1]), queries[:1]), queries[:3], 0)
    assert found.shape == (3, 0)


def test_a_single_query_vector_is_a_batch_of_one(flat):
    ids, vecs, index, info = flat
    _, found = vectors.search(index, info, vecs[5], 3)
    assert found.shape == (1, 3) and found[0, 0] == ids[5]


def test_too_few_vectors_to_measure_recall():
    ids, vecs = np.arange(10, 20), clustered(10, seed=6)
    config = VectorIndexConfig(max_memory=estimate_bytes(10, DIM, DIM, 1))
    index, info = vectors.build(ids, vecs, config)
    assert (info.kind, info.params["nlist"], info.recall_at_10) == ("ivf-sq8", 1, None)
    _, found = vectors.search(index, info, vecs, 1)
    np.testing.assert_array_equal(found[:, 0], ids)


def test_use_gpu_without_gpu_support_is_a_clear_error(data):
    if faiss.get_num_gpus() > 0:
        pytest.skip("this faiss has a GPU")
    ids, vecs = data
    with pytest.raises(ClipsearchError, match="faiss-gpu"):
        vectors.build(ids, vecs, dataclasses.replace(IVF, use_gpu=True))
    _, info = vectors.build(ids[:1500], vecs[:1500], dataclasses.replace(IVF, use_gpu=False))
    assert info.built_on == "cpu"


def test_bad_inputs_are_rejected(flat):
    vecs = clustered(3, seed=2)
    with pytest.raises(ValueError, match="dim"):
        vectors.search(flat[2], flat[3], np.ones((2, DIM + 1), np.float32), 3)
    with pytest.raises(ValueError, match="unique"):
        vectors.build(np.array([1, 1, 2]), vecs)
    with pytest.raises(ValueError, match="non-negative"):
        vectors.build(np.array([-1, 1, 2]), vecs)
    with pytest.raises(ValueError, match="2-D"):
        vectors.build(np.array([1, 2]), vecs)


def compressed(n: int, code_bytes: int) -> VectorIndexConfig:
    """A config whose max_memory fits n vectors of ``code_bytes`` each, and no more."""
    return VectorIndexConfig(
        flat_threshold=1000, max_memory=estimate_bytes(n, DIM, code_bytes, nlist_for(n))
    )


@pytest.mark.parametrize(("code_bytes", "kind"), [(DIM, "ivf-sq8"), (16, "ivf-pq")])
def test_compressed_kinds_build_and_search(data, queries, code_bytes, kind):
    ids, vecs = data[0][:3000], data[1][:3000]
    index, info = vectors.build(ids, vecs, compressed(len(ids), code_bytes))
    assert info.kind == kind and info.params.get("m") == (16 if kind == "ivf-pq" else None)
    assert info.recall_at_10 is not None and info.recall_at_10 > 0.3
    _, found = vectors.search(index, info, queries, 10)
    assert found.shape == (len(queries), 10) and np.isin(found, ids).all()
    assert recall(found, brute(queries, ids, vecs, 10)[1]) >= info.recall_at_10 - 0.1


# -- save and load -----------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("which", ["flat", "ivf"])
def test_save_load_round_trip(which, mmap, request, queries, tmp_path):
    ids, _, index, info = request.getfixturevalue(which)
    path = tmp_path / "index.faiss"
    vectors.save(index, path)
    assert sorted(os.listdir(tmp_path)) == ["index.faiss"]
    vectors.save(index, str(path))  # over an existing file
    loaded = vectors.load(path, mmap=mmap)
    assert sorted(os.listdir(tmp_path)) == ["index.faiss"]
    subset = np.unique(vectors.search(index, info, queries, 50)[1])
    for allowed in [None, subset, ids[::2]]:
        before = vectors.search(index, info, queries, 10, allowed)
        after = vectors.search(loaded, info, queries, 10, allowed)
        np.testing.assert_array_equal(before[1], after[1])
        np.testing.assert_array_equal(before[0], after[0])


def test_mapped_ivf_index_stays_out_of_memory(tmp_path):
    """A searcher maps an IVF index instead of reading it: resident memory grows by a
    fraction of the file (what a query process of a large index relies on). Readers map
    IVF indexes only; flat ones they read (see Snapshot.vectors)."""
    ids, vecs = np.arange(60_000, dtype=np.int64), clustered(60_000, seed=3)  # 60k x DIM
    path = tmp_path / "index.faiss"
    vectors.save(vectors.build(ids, vecs, IVF)[0], path)
    code = (
        "import sys, faiss\n"
        "from clipsearch.store import vectors\n"
        "def rss():\n"
        "    status = open('/proc/self/status').read()\n"
        "    return int(status.split('VmRSS:')[1].split()[0]) * 1024\n"
        "before = rss()\n"
        "index = vectors.load(sys.argv[1], mmap=sys.argv[2] == '1')\n"
        "print(rss() - before)\n"
    )
    grew = {
        mmap: int(subprocess.check_output([sys.executable, "-c", code, str(path), mmap]))
        for mmap in "01"
    }
    size = path.stat().st_size
    # What stays resident when mapped: the id map and the IVF quantizer.
    assert grew["0"] > 0.8 * size and grew["1"] < 0.4 * size, (grew, size)


def test_build_from_chunks_equals_build_from_arrays(data, queries):
    """The streaming build (passes over chunks) makes the same index as one array."""
    ids, vecs = data
    passes = []

    def chunks():
        passes.append(1)
        return ((ids[i : i + 700], vecs[i : i + 700]) for i in range(0, len(ids), 700))

    streamed, info = vectors.build_from(vectors.VectorSource(len(ids), DIM, chunks), IVF)
    whole, whole_info = vectors.build(ids, vecs, IVF)
    assert len(passes) == 3 and info == whole_info  # sample, assign to lists, add
    for allowed in [None, ids[::3]]:
        np.testing.assert_array_equal(
            vectors.search(streamed, info, queries, 10, allowed)[1],
            vectors.search(whole, whole_info, queries, 10, allowed)[1],
        )
    with pytest.raises(ValueError, match="promised"):
        vectors.build_from(vectors.VectorSource(len(ids) + 5, DIM, chunks), IVF)


def test_load_reports_missing_and_damaged_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no vector index"):  # readers look again
        vectors.load(tmp_path / "absent.faiss")
    (tmp_path / "bad.faiss").write_bytes(b"not an index")
    with pytest.raises(ClipsearchError, match="rebuild"):
        vectors.load(tmp_path / "bad.faiss")
    with pytest.raises(ClipsearchError, match="cannot write"):
        vectors.save(faiss.IndexFlatIP(4), tmp_path / "no-such-dir" / "x.faiss")


# -- update ------------------------------------------------------------------------------


def _never():
    raise AssertionError("an incremental update must not read every vector")


NEVER = vectors.VectorSource(0, DIM, _never)


@pytest.mark.parametrize("config", [VectorIndexConfig(), IVF])
def test_update_removes_and_adds_in_place(data, config, queries):
    ids, vecs = data[0][:4000], data[1][:4000]
    index, info = vectors.build(ids, vecs, config)
    old_info = dataclasses.replace(info, params=dict(info.params))
    gone = ids[:300]
    new_ids = np.arange(10, 110, dtype=np.int64)
    new_vecs = clustered(100, seed=7)
    index, info = vectors.update(
        index,
        info,
        remove_ids=np.concatenate([gone, [123456789]]),  # an unknown id is ignored
        added=vectors.VectorSource.of_arrays(new_ids, new_vecs),
        everything=NEVER,
        config=config,
    )
    assert info.kind == old_info.kind and info.count == index.ntotal == 4000 - 300 + 100
    _, everything = vectors.search(index, info, queries[:3], 10_000)
    assert everything.shape == (3, info.count)
    assert not np.isin(gone, everything).any() and np.isin(new_ids, everything[0]).all()
    scores, found = vectors.search(index, info, new_vecs, 1)
    np.testing.assert_array_equal(found[:, 0], new_ids)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    if info.kind == "ivf-flat":
        # Cheap at this size, so nprobe was tuned again for the new contents.
        assert info.params["tuned_count"] == info.count and info.recall_at_10 >= 0.95


def test_update_keeps_the_tuning_when_retuning_is_not_cheap(data, monkeypatch):
    ids, vecs = data
    index, info = vectors.build(ids[:4000], vecs[:4000], IVF)
    monkeypatch.setattr(vectors, "RETUNE_BUDGET", 0)
    index, new_info = vectors.update(
        index,
        info,
        remove_ids=ids[:10],
        added=vectors.VectorSource.of_arrays(ids[4000:4100], vecs[4000:4100]),
        everything=NEVER,
        config=IVF,
    )
    assert new_info.count == 4090
    assert new_info.params == info.params and new_info.recall_at_10 == info.recall_at_10
    assert new_info.params["tuned_count"] == 4000  # says when recall was measured


def test_update_with_removals_only_and_bad_additions(flat):
    ids, vecs, _, _ = flat
    index, info = vectors.build(ids, vecs)
    with pytest.raises(ValueError, match="dim"):
        vectors.update(
            index,
            info,
            remove_ids=ids[:1],
            added=vectors.VectorSource.of_arrays(ids[:1], np.ones((1, DIM + 1), np.float32)),
            everything=NEVER,
        )
    index, info = vectors.update(
        index,
        info,
        remove_ids=ids[:5],
        added=vectors.VectorSource.of_arrays(np.empty(0, np.int64), np.empty((0, DIM), np.float32)),
        everything=NEVER,
    )
    assert info.count == index.ntotal == len(ids) - 5


def test_update_reads_the_added_vectors_in_chunks(ivf):
    ids, vecs, _, _ = ivf
    index, info = vectors.build(ids[:2000], vecs[:2000], IVF)
    passes = []

    def chunks():
        passes.append(1)
        return iter([(ids[2000:2100], vecs[2000:2100]), (ids[2100:2300], vecs[2100:2300])])

    index, info = vectors.update(
        index,
        info,
        remove_ids=ids[:50],
        added=vectors.VectorSource(300, DIM, chunks),
        everything=NEVER,
        config=IVF,
    )
    assert passes == [1, 1]  # their ids first (an added id replaces a stored one), then them
    assert info.count == index.ntotal == 2000 - 50 + 300
    _, found = vectors.search(index, info, vecs[2000:2300], 1)
    np.testing.assert_array_equal(found[:, 0], ids[2000:2300])


def test_update_replaces_the_vector_of_an_added_id(flat):
    ids, vecs, _, _ = flat
    index, info = vectors.build(ids, vecs)
    moved = clustered(1, seed=8)
    index, info = vectors.update(
        index,
        info,
        remove_ids=np.empty(0, np.int64),
        added=vectors.VectorSource.of_arrays(ids[:1], moved),
        everything=NEVER,
    )
    assert info.count == len(ids)
    scores, found = vectors.search(index, info, moved, 1)
    assert found[0, 0] == ids[0] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_update_crossing_the_threshold_rebuilds_as_ivf(data):
    ids, vecs = data
    index, info = vectors.build(ids[:900], vecs[:900], IVF)
    assert info.kind == "flat"
    calls = []

    def chunks():
        calls.append(1)
        return iter([(ids[:700], vecs[:700]), (ids[700:1500], vecs[700:1500])])

    index, info = vectors.update(
        index,
        info,
        remove_ids=np.empty(0, np.int64),
        added=vectors.VectorSource.of_arrays(ids[900:1500], vecs[900:1500]),
        everything=vectors.VectorSource(1500, DIM, chunks),
        config=IVF,
    )
    assert calls == [1, 1, 1]  # passes: the training sample, list sizes, the vectors
    assert info.kind == "ivf-flat" and info.count == index.ntotal == 1500
    assert info.params["trained_count"] == 1500


def test_large_ivf_changes_rebuild(ivf):
    ids, vecs, _, _ = ivf
    index, info = vectors.build(ids[:2000], vecs[:2000], IVF)
    # More than twice the trained count: the lists would grow unbalanced.
    index, info = vectors.update(
        index,
        info,
        remove_ids=np.empty(0, np.int64),
        added=vectors.VectorSource.of_arrays(ids[2000:4500], vecs[2000:4500]),
        everything=vectors.VectorSource.of_arrays(ids[:4500], vecs[:4500]),
        config=IVF,
    )
    assert info.params["trained_count"] == 4500 == info.count


# -- filtered search ---------------------------------------------------------------------


def check_filtered(index, info, queries, ids, vecs, allowed, k, min_recall=1.0):
    scores, found = vectors.search(index, info, queries, k, allowed)
    present = np.isin(ids, allowed)
    want_k = min(k, int(present.sum()))
    assert found.shape == scores.shape == (len(queries), want_k)
    assert np.isin(found, allowed).all()
    want_scores, want_ids = brute(queries, ids[present], vecs[present], want_k)
    if min_recall == 1.0:
        # An exact top k: the found ids score what the true top k score, rank by rank (ids
        # may differ only where two scores tie within float rounding).
        position = {int(i): n for n, i in enumerate(ids)}
        rows = np.vectorize(position.__getitem__)(found)
        true_scores = np.einsum("qd,qkd->qk", queries, vecs[rows])
        np.testing.assert_allclose(true_scores, want_scores, atol=1e-5)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
        assert (found == want_ids).mean() > 0.99
    else:
        assert recall(found, want_ids) >= min_recall


@pytest.mark.parametrize("which", ["flat", "ivf", "ivf_dense"])
@pytest.mark.parametrize("subset", ["small", "large"])
def test_allowed_ids_restrict_results(which, subset, request, queries, monkeypatch):
    ids, vecs, index, info = request.getfixturevalue(which)
    rng = np.random.default_rng(3)
    allowed = rng.choice(ids, len(ids) // 10 if subset == "small" else len(ids) // 3)
    if subset == "large":
        # Below SMALL_SUBSET the exact path is taken; lower it to reach the selector path.
        monkeypatch.setattr(vectors, "SMALL_SUBSET", len(allowed) // 2)
    exact = which == "flat" or subset == "small"
    check_filtered(index, info, queries, ids, vecs, allowed, 10, 1.0 if exact else 0.95)


@pytest.mark.parametrize("which", ["flat", "ivf", "ivf_dense"])
@pytest.mark.parametrize("small_limit", [20_000, 0])
def test_allowed_ids_fewer_than_k_or_unknown(which, small_limit, request, queries, monkeypatch):
    ids, vecs, index, info = request.getfixturevalue(which)
    monkeypatch.setattr(vectors, "SMALL_SUBSET", small_limit)
    unknown = ids.max() + np.arange(1, 4)  # not in the index: never returned
    for allowed in [ids[:4], np.concatenate([ids[100:130], unknown])]:
        check_filtered(index, info, queries, ids, vecs, allowed, 10)


@pytest.mark.parametrize("which", ["ivf", "ivf_dense"])
def test_ivf_selector_falls_back_when_probed_lists_hold_too_few(
    which, request, queries, monkeypatch
):
    ids, vecs, index, info = request.getfixturevalue(which)
    monkeypatch.setattr(vectors, "SMALL_SUBSET", 0)
    allowed = np.random.default_rng(4).choice(ids, N // 3, replace=False)
    # The probed lists hold about nprobe·N/nlist allowed vectors, far fewer than k: the
    # search must scan every list rather than come back short.
    k = 600
    assert info.params["nprobe"] * N / info.params["nlist"] < k / 2
    check_filtered(index, info, queries[:20], ids, vecs, allowed, k)


def test_empty_allowed_ids_return_empty_arrays(flat, ivf, queries):
    for _, _, index, info in (flat, ivf):
        scores, found = vectors.search(index, info, queries[:5], 10, np.empty(0, np.int64))
        assert scores.shape == found.shape == (5, 0)
        assert scores.dtype == np.float32 and found.dtype == np.int64


def test_sq8_exhaustive_scores_are_the_decoded_inner_products(data, queries):
    ids, vecs = data
    index, info = vectors.build(ids, vecs, compressed(N, DIM))
    assert info.kind == "ivf-sq8"
    # An unknown allowed id sends search to the scan of every list, with residual scores.
    allowed = np.concatenate([ids[:500], [5]])
    scores, found = vectors.search(index, info, queries, 10, allowed)
    decoded = index.reconstruct_batch(ids[:500])
    want_scores, want_ids = brute(queries, ids[:500], decoded, 10)
    assert recall(found, want_ids) >= 0.98
    np.testing.assert_allclose(scores, want_scores, atol=2e-3)


def test_exact_top_k_is_best_first_with_ties_in_row_order():
    stored = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0]], np.float32)
    scores, rows = vectors.exact_top_k(np.array([[1.0, 0.0]], np.float32), stored, 3)
    assert rows.tolist() == [[1, 3, 2]] and scores[0].tolist() == pytest.approx([1, 1, 0.6])
    assert vectors.exact_top_k(stored[:1], stored, 10)[1].shape == (1, 4)  # k beyond the rows
