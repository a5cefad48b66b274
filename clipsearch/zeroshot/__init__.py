"""Zero-shot classification: labels from prompt-ensembled text embeddings.

| module | job |
| --- | --- |
| ``templates`` | prompt template sets and the classifier weights made from them |
| ``classify`` | classify indexed images or a folder; the classifier cache; tags |
| ``accuracy`` | score predictions against true labels (labelled folders, training) |
"""
