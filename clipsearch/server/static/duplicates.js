// The duplicates page: groups of images that are the same photo, side by side, keeper first
// (common.js first). Nothing here deletes or moves a file.
"use strict";

function readableSize(bytes) {
  return bytes >= 100000 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  $("threshold").value = params.get("threshold") || ""; // empty: the server's default
  $("where").value = params.get("where") || "";
}

function query() {
  const params = new URLSearchParams();
  const threshold = $("threshold").value.trim();
  if (threshold) params.set("threshold", threshold);
  const where = $("where").value.trim();
  if (where) params.set("where", where);
  return params;
}

function find() {
  const send = () => fetch("/api/duplicates?" + query().toString());
  return showLatest(send, render, "Comparing every image with its nearest neighbours…");
}

function render(data) {
  $("threshold").value = String(data.threshold);
  const groups = data.groups || [];
  const copies = groups.reduce((n, g) => n + g.images.length - 1, 0);
  const bytes = groups.reduce((n, g) => n + g.reclaimable_bytes, 0);
  const shown = data.groups_total > groups.length ? ` (first ${groups.length} shown)` : "";
  setStatus(
    `${data.groups_total} group${data.groups_total === 1 ? "" : "s"}${shown} · ` +
      `${copies} redundant cop${copies === 1 ? "y" : "ies"} · ${readableSize(bytes)} · ` +
      `${Math.round(data.took_ms)} ms · nothing is deleted or moved`
  );
  $("groups").replaceChildren(...groups.map(group));
}

function group(data, index) {
  const title = `Group ${index + 1}: ${data.images.length} images, ` +
    `${readableSize(data.reclaimable_bytes)} in copies`;
  return element("section", { className: "group" }, [
    element("h2", { textContent: title }),
    element("div", { className: "grid" }, data.images.map(member)),
  ]);
}

function member(image) {
  const link = element("a", {
    className: "thumb", href: image.image_url, target: "_blank", rel: "noopener",
  }, [thumbnail(image.thumbnail_url, image.path)]);
  const verdict = image.keeper ? "keep" : image.identical ? "identical" : image.similarity.toFixed(3);
  const pixels = image.width && image.height ? `${image.width}×${image.height}` : "?";
  const facts = `${pixels} · ${image.format || "?"} · ${readableSize(image.size)}`;
  const caption = element("figcaption", {}, [
    element("div", { className: "meta" }, [
      element("span", { className: "score", textContent: verdict }),
      element("span", { className: "size", textContent: facts }),
    ]),
    element("span", { className: "name", textContent: baseName(image.path), title: image.path }),
  ]);
  const figure = element("figure", { className: image.keeper ? "card keeper" : "card" }, [link, caption]);
  figure.dataset.id = image.id;
  return figure;
}

function start() {
  readHash();
  $("find").addEventListener("submit", (event) => {
    event.preventDefault();
    history.replaceState(null, "", "#" + query().toString());
    find();
  });
  window.addEventListener("hashchange", () => {
    readHash();
    find();
  });
  find();
}

start();
