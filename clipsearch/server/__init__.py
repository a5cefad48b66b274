"""``clipsearch serve``: a JSON API and a web page over one image index.

May import every floor below: ``query`` (its one read path), ``texts``, ``zeroshot``,
``store``, ``model``, ``base``.

The package is split by job. ``config``, ``discovery`` and ``client`` are imported by the
CLI before any command runs (its help, ``clipsearch query``), so they use the
standard library alone:

| module | job |
| --- | --- |
| ``config`` | ``ServerConfig``: limits and options, with their defaults |
| ``served_index`` | ``ServedIndex``: the open ``Index``, moved to each new snapshot; caches |
| ``rows`` | a snapshot's rows in memory; checked filters run on a file-less DuckDB |
| ``files`` | opens an indexed file by id, refusing anything that is not that file |
| ``thumbnails`` | JPEG thumbnails made on demand, cached on disk with a size bound |
| ``text_collections`` | stored text collections a client may name (image → text) |
| ``uploads`` | decodes an uploaded query image safely |
| ``security`` | ASGI middleware: Host check, body-size limit, security headers |
| ``errors`` | every error becomes a JSON body with a 4xx (or a bare 500) status |
| ``schemas`` | the response models that document the API (``/docs``) |
| ``api``, ``media`` | the routes: JSON endpoints; thumbnails, files and the page |
| ``app`` | ``create_app(config)`` wires the above together |
| ``runner`` | binds the socket, writes ``server.json``, runs uvicorn |
| ``discovery``, ``client`` | ``INDEX/server.json``, and the small client ``query`` uses |

A client's ``where`` is checked by ``clipsearch.query.filters``, as every filter is, local
ones included.
"""
