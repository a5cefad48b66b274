"""Text collections: captions or labels embedded once, searched by image embeddings.

May import: ``base``, ``model``, ``store``.

    from clipsearch.texts import TextCollection, rank_texts, resolve_texts
    collection = TextCollection.build(Path("captions.txt"), Path("indexes/caps"), model)
    collection = TextCollection.open("caps")                 # indexes/caps, or a directory
    hits = collection.search(model.embed_images(["q.jpg"]), k=5)   # [[TextHit, ...]]
    hits = rank_texts(model, ["a dog", "a cat"], query_vectors, k=1)  # no collection

A collection is a directory, laid out like an image index (indexes/README.md):

    manifest.json           the image index's manifest type (clipsearch.store.manifest) with
                            "kind": "texts": model identity, counts {"texts": n}, the
                            source file's name and sha256, the files below ("catalog"
                            names the texts file; collections written before name it
                            "texts", and still open)
    catalog/texts-<hex>.parquet  id (int64), text (string), embedding
                            (fixed_size_list<float32>[dim])
    vectors/index-<snapshot>.faiss  the FAISS index over the embeddings (store.vectors.build)
    retired/                files an earlier snapshot named, for its readers (see below)
    pending/                while a build runs: its new files, until its commit moves them in
    .lock                   held by the one process building the collection

``id`` is the 0-based line number of the text in the source file: blank lines are skipped
and a repeated text is kept once, under its first line, so ids can have gaps. Re-building
writes new files and commits them by renaming a new manifest over the old one, so a reader
sees the old collection or the new one, never a mix; the old files are retired (moved into
``retired/`` and listed in the manifest's ``retired``) and deleted by a build 10 minutes
later, as in an image index (``store.snapshots.commit_next``). Collections built before
they took these folders kept ``texts-<hex>.parquet`` and ``vectors-<hex>.faiss`` at the top:
they open as they are, and their next build retires those files.
"""

from clipsearch.texts.collection import (
    TextCollection,
    build_collection,
    check_model,
    read_text_manifest,
    texts_schema,
)
from clipsearch.texts.lookup import locate_texts, rank_image_against_texts, resolve_texts
from clipsearch.texts.ranking import TextHit, TextList, rank_texts
from clipsearch.texts.source import SourceTexts, read_texts_file

__all__ = [
    "SourceTexts",
    "TextCollection",
    "TextHit",
    "TextList",
    "build_collection",
    "check_model",
    "locate_texts",
    "rank_image_against_texts",
    "rank_texts",
    "read_text_manifest",
    "read_texts_file",
    "resolve_texts",
    "texts_schema",
]
