"""The ground floor: what every stage may use, and what uses no other part of clipsearch.

May import: ``clipsearch.errors``, ``clipsearch.settings``.

| module | job |
| --- | --- |
| ``durable`` | files written durably: temporary name, fsync, rename (``publishing``) |
| ``access`` | owner-only files and folders, whatever the umask |
| ``images`` | one image file → an upright RGB image plus its facts (every mode, pixel cap, EXIF) |
| ``fingerprint`` | 8x8 grey levels per image, kept in the catalog (duplicates) |
| ``process_group`` | several processes on one job under torchrun (indexing, training) |
"""
