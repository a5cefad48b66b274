"""The words written in photos (OCR): signs, screenshots, receipts, slides.

May import: ``base`` (and ``errors``, ``settings``). The models come with the ``ocr`` extra
(``pip install 'clipsearch[ocr]'``); importing this package imports none of it.

| module | job |
| --- | --- |
| ``reader`` | ``TextReader``: one upright image → its lines of text, each with box and confidence |
"""
