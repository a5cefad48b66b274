"""The index on disk: what an index directory holds and the one way it changes.

Every file but the manifest is immutable; a commit writes new files, then renames a new
manifest over the old one (indexes/README.md has the format). Writers go through
``storage``; readers open a snapshot (``clipsearch.query.snapshot``).

| module | job |
| --- | --- |
| ``manifest`` | ``Manifest``: the one file that names the current snapshot's files |
| ``storage`` | durable writes, the writer's lock, snapshot commits, retiring old files |
| ``catalog`` | Parquet catalog parts: one row per image, its metadata and embedding |
| ``staging`` | rows embedded but not yet committed: an interrupted run resumes from them |
| ``vectors`` | the FAISS vector index: choose a kind, build, tune, update, search |
| ``repair`` | check every file a manifest names; keep what is intact, rebuild the rest |
"""
