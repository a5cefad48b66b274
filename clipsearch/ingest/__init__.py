"""Files in, a committed snapshot out: ``clipsearch index`` stage by stage.

May import: ``base``, ``model``, ``store`` (and ``errors``, ``settings``).

| module | job |
| --- | --- |
| ``scan`` | find candidate image files under the given paths |
| ``diff`` | compare the scan with the catalog: new, changed, moved, removed, unchanged |
| ``loader`` | decode (``base.images``) in parallel worker processes into model-ready batches |
| ``indexer`` | the run: plan, embed, stage, commit (``update_index``) |
| ``datasets`` | a Parquet image dataset written out as image files |
"""
