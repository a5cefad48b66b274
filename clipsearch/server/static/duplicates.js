// The duplicates page: groups of images that are the same photo, side by side, keeper first.
// Nothing here deletes or moves a file. Server text only goes into textContent or attributes.
"use strict";

const $ = (id) => document.getElementById(id);
let latest = 0; // number of the newest request: older answers are dropped

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

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

async function find() {
  const mine = ++latest;
  setStatus("Comparing every image with its nearest neighbours…");
  try {
    const response = await fetch("/api/duplicates?" + query().toString());
    const data = await response.json().catch(() => ({}));
    if (mine !== latest) return;
    if (!response.ok) {
      setStatus(data.error || `${response.status} ${response.statusText}`, true);
      return;
    }
    render(data);
  } catch (error) {
    if (mine === latest) setStatus(`Cannot reach the server: ${error.message}`, true);
  }
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
  const section = document.createElement("section");
  section.className = "group";
  const title = document.createElement("h2");
  title.textContent = `Group ${index + 1}: ${data.images.length} images, ${readableSize(data.reclaimable_bytes)} in copies`;
  const row = document.createElement("div");
  row.className = "grid";
  row.append(...data.images.map(member));
  section.append(title, row);
  return section;
}

function member(image) {
  const figure = document.createElement("figure");
  figure.className = image.keeper ? "card keeper" : "card";
  figure.dataset.id = image.id;
  const link = document.createElement("a");
  link.className = "thumb";
  link.href = image.image_url;
  link.target = "_blank";
  link.rel = "noopener";
  const img = document.createElement("img");
  img.src = image.thumbnail_url;
  img.alt = image.path.split(/[\\/]/).pop();
  img.loading = "lazy";
  link.append(img);

  const meta = document.createElement("div");
  meta.className = "meta";
  const verdict = document.createElement("span");
  verdict.className = "score";
  verdict.textContent = image.keeper ? "keep" : image.identical ? "identical" : image.similarity.toFixed(3);
  const facts = document.createElement("span");
  facts.className = "size";
  const pixels = image.width && image.height ? `${image.width}×${image.height}` : "?";
  facts.textContent = `${pixels} · ${image.format || "?"} · ${readableSize(image.size)}`;
  meta.append(verdict, facts);
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = image.path.split(/[\\/]/).pop();
  name.title = image.path;
  const caption = document.createElement("figcaption");
  caption.append(meta, name);
  figure.append(link, caption);
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
