"""Zero-shot classification: labels from prompt-ensembled text embeddings.

May import: ``base``, ``model``, ``store``, ``ingest`` (not ``query``: an ``Index`` calls in).

| module | job |
| --- | --- |
| ``templates`` | prompt template sets and the classifier weights made from them |
| ``classify`` | classifiers (cached), classify a folder, commit labels as tags |
| ``accuracy`` | score predictions against true labels (labelled folders, training) |
"""
