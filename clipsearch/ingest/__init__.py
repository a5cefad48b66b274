"""Files in, a committed snapshot out: ``clipsearch index`` stage by stage.

| module | job |
| --- | --- |
| ``scan`` | find candidate image files under the given paths |
| ``diff`` | compare the scan with the catalog: new, changed, moved, removed, unchanged |
| ``decode`` | one file → an upright RGB image plus its catalog facts |
| ``fingerprint`` | 8x8 grey levels per image, kept in the catalog (duplicates) |
| ``loader`` | decode in parallel worker processes into model-ready batches |
| ``indexer`` | the run: plan, embed, stage, commit (``update_index``) |
| ``distributed`` | several processes on one run under torchrun |
| ``datasets`` | a Parquet image dataset written out as image files |
"""
