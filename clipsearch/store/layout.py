"""Every file and folder an index directory holds, named once (indexes/README.md has the
format). Text collections use the same names for what they share with image indexes.

```
INDEX/
  manifest.json        MANIFEST_NAME   the committed snapshot: names every live file below
  catalog/             CATALOG_DIR     Parquet parts, one row per image
  vectors/             VECTORS_DIR     the FAISS index of each snapshot (``vector_file``)
  errors/              ERRORS_DIR      files that could not be read, with the reason
  tags/                TAGS_DIR        zero-shot labels (``tags_file``), joined on id
  retired/             RETIRED_DIR     files a commit replaced, for readers of the snapshot before
  pending/             PENDING_DIR     a writer's new files, until its commit moves them in
  staging/             STAGING_DIR     rows embedded by an unfinished run, and
    state.json         STAGING_STATE_NAME  the snapshot and model they belong to
  .lock                LOCK_NAME       held by the one writer
  server.json          SERVER_FILE     the server answering for the index (owner-only)
  thumbnails/          THUMBNAILS_DIR  thumbnails the server made (owner-only)
  .idle-server.lock    IDLE_SERVER_LOCK  held by the one background server
```
"""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"
CATALOG_DIR = "catalog"
VECTORS_DIR = "vectors"
ERRORS_DIR = "errors"
TAGS_DIR = "tags"
# Where retired files wait out their grace period, under their relative path
# (retired/catalog/part-x.parquet): out of the folders a reader may glob.
RETIRED_DIR = "retired"
# Where a writer's new files wait for its commit, under the relative path its manifest gives
# them (pending/catalog/part-x.parquet): out of the folders a reader may glob until then.
PENDING_DIR = "pending"
# Staged rows of an unfinished run (store.staging), kept for the next run to re-use.
STAGING_DIR = "staging"
STAGING_STATE_NAME = "state.json"  # in staging/: which snapshot and model its rows belong to
LOCK_NAME = ".lock"
SERVER_FILE = "server.json"
THUMBNAILS_DIR = "thumbnails"
IDLE_SERVER_LOCK = ".idle-server.lock"
# Zero-shot labels as clipsearch wrote them before they were part of a snapshot: read when
# the manifest names no tags file.
LEGACY_TAGS_NAME = "tags.parquet"

# The folders whose files a commit makes: what clean-up looks through for leftovers.
SNAPSHOT_DIRS = (CATALOG_DIR, ERRORS_DIR, VECTORS_DIR, TAGS_DIR)
# All a writer leaves in a folder before its first commit: no index yet, but not another
# program's folder either.
WRITER_LEFTOVERS = frozenset({LOCK_NAME, STAGING_DIR, PENDING_DIR, RETIRED_DIR})


def vector_file(snapshot: int) -> str:
    """The vector index of snapshot ``snapshot``, relative to the index directory."""
    return f"{VECTORS_DIR}/index-{snapshot:06d}.faiss"


def tags_file(snapshot: int) -> str:
    """The zero-shot labels written with snapshot ``snapshot``, relative to the index."""
    return f"{TAGS_DIR}/tags-{snapshot:06d}.parquet"
