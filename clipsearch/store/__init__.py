"""The index on disk: what an index directory holds and the one way it changes.

May import: ``base``, ``model.identity`` (and ``errors``, ``settings``); nothing of the
stages above (``ingest``, ``query``, ...): they all stand on this floor.

Every file but the manifest is immutable; a commit writes new files, then renames a new
manifest over the old one (indexes/README.md has the format). Every writer commits through
``snapshots.commit_next``; readers open a snapshot (``clipsearch.query.snapshot``).

| module | job |
| --- | --- |
| ``layout`` | the name of every file and folder in an index directory |
| ``manifest`` | ``Manifest``: the one file that names the current snapshot's files; opening it |
| ``snapshots`` | the one commit path: lock, clean-up, ``commit_next``, zero-shot labels |
| ``storage`` | the commit protocol underneath: pending/, retired/, the manifest's rename |
| ``catalog`` | Parquet catalog parts: one row per image, its metadata and embedding |
| ``staging`` | rows embedded but not yet committed: an interrupted run resumes from them |
| ``vectors`` | the FAISS vector index: choose a kind, build, tune, update, search |
| ``repair`` | check every file a manifest names; keep what is intact, rebuild the rest |
"""
