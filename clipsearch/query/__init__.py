"""Reading an index: the one read path the CLI, the Python API and the server share.

May import: ``base``, ``model``, ``store``, ``ingest``, ``texts``, ``zeroshot``.

| module | job |
| --- | --- |
| ``search`` | ``Index``: open, search by text, image or id, duplicates, classify |
| ``snapshot`` | one committed snapshot: rows, filters, embeddings, the vector index |
| ``filters`` | checks a ``where`` filter before DuckDB runs it: one predicate, no file access |
| ``terms`` | weighted query terms ("2:beach", "-people") combined into one vector |
| ``duplicates`` | groups of images that are the same photo |
| ``pages`` | self-contained HTML pages of images (search hits, duplicates, the demo) |
"""
