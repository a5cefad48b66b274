// The search page: plain JavaScript over the JSON API, no build step (common.js first).
// Text from the server (paths, errors) only ever goes into textContent or attributes,
// never into HTML, so a file named "<script>.jpg" is just a name.
"use strict";

const WEB_FORMATS = new Set(["JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "AVIF"]);
const COLUMNS = "width,height,format";
const state = { q: "", where: "", k: 48, like: null, image: null };
let viewing = null; // the hit shown in the viewer

// -- the query: form, hash, chip -------------------------------------------------------------

function readForm() {
  state.q = $("q").value.trim();
  state.where = $("where").value.trim();
  state.k = Number($("k").value) || 48;
}

function writeForm() {
  $("q").value = state.q;
  $("where").value = state.where;
  $("k").value = String(state.k);
}

function hashOf() {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  if (state.like !== null) params.set("like", state.like);
  if (state.where) params.set("where", state.where);
  params.set("k", state.k);
  return "#" + params.toString();
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  state.q = params.get("q") || "";
  state.where = params.get("where") || "";
  state.k = Number(params.get("k")) || 48;
  const like = params.get("like");
  state.like = like !== null && /^\d+$/.test(like) ? Number(like) : null;
  state.image = null;
  writeForm();
  showChip(state.like !== null ? { src: `/api/images/${state.like}/thumbnail`, label: `like #${state.like}` } : null);
}

function showChip(chip) {
  $("query-image").hidden = !chip;
  if (chip) {
    $("query-preview").src = chip.src;
    $("query-label").textContent = chip.label;
  }
}

function hasQuery() {
  return Boolean(state.q || state.image || state.like !== null);
}

function search() {
  if (!hasQuery()) {
    setStatus("Type a description, drop an image, or pick “More like this”.");
    $("grid").replaceChildren();
    return;
  }
  if (!state.image && location.hash !== hashOf()) {
    history.pushState(null, "", hashOf()); // back and forward walk through searches
  }
  run();
}

// -- talking to the API ---------------------------------------------------------------------

function request() {
  if (state.image) {
    const body = new FormData();
    body.append("image", state.image);
    if (state.q) body.append("q", state.q);
    if (state.like !== null) body.append("like", state.like);
    if (state.where) body.append("where", state.where);
    body.append("k", state.k);
    body.append("columns", COLUMNS);
    return fetch("/api/search", { method: "POST", body });
  }
  const params = new URLSearchParams({ k: state.k, columns: COLUMNS });
  if (state.q) params.append("q", state.q);
  if (state.like !== null) params.append("like", state.like);
  if (state.where) params.append("where", state.where);
  return fetch("/api/search?" + params.toString());
}

function run() {
  return showLatest(request, render, "Searching…");
}

// -- results ----------------------------------------------------------------------------------

function render(data) {
  const hits = data.hits || [];
  const plural = hits.length === 1 ? "" : "s";
  setStatus(`${hits.length} result${plural} · ${Math.round(data.took_ms)} ms`);
  $("grid").replaceChildren(...hits.map(card));
}

function card(hit) {
  const figure = document.createElement("figure");
  figure.className = "card";
  figure.dataset.id = hit.id;

  const thumb = document.createElement("button");
  thumb.type = "button";
  thumb.className = "thumb";
  thumb.title = "Show the full image";
  thumb.append(thumbnail(hit.thumbnail_url, hit.path));
  thumb.addEventListener("click", () => openViewer(hit));

  const { width, height } = hit.columns || {};
  const meta = element("div", { className: "meta" }, [
    element("span", { className: "score", textContent: hit.score.toFixed(3) }),
    element("span", { className: "size", textContent: width && height ? `${width}×${height}` : "" }),
  ]);

  const name = document.createElement("span");
  name.className = "name";
  name.textContent = baseName(hit.path);
  name.title = hit.path;

  const like = document.createElement("button");
  like.type = "button";
  like.className = "like";
  like.textContent = "More like this";
  like.addEventListener("click", () => moreLike(hit));

  const caption = document.createElement("figcaption");
  caption.append(meta, name);
  if (hit.text) caption.append(photoText(hit.text, hit.text_marks || []));
  caption.append(like);
  figure.append(thumb, caption);
  return figure;
}

// The words read in the photo (an index made with --ocr), those the query found in <mark>.
function photoText(text, marks) {
  const words = document.createElement("p");
  words.className = "words";
  words.title = text;
  let end = 0;
  for (const [start, stop] of marks) {
    words.append(text.slice(end, start), element("mark", { textContent: text.slice(start, stop) }));
    end = stop;
  }
  words.append(text.slice(end));
  return words;
}

function moreLike(hit) {
  state.like = hit.id;
  state.image = null;
  state.q = "";
  $("q").value = "";
  showChip({ src: hit.thumbnail_url, label: `like ${baseName(hit.path)}` });
  search();
  window.scrollTo({ top: 0 });
}

// -- the full-image viewer ----------------------------------------------------------------------

function openViewer(hit) {
  viewing = hit;
  const format = (hit.columns || {}).format;
  const large = `${hit.thumbnail_url}&size=1024`;
  $("viewer-img").src = WEB_FORMATS.has(format) ? hit.image_url : large;
  $("viewer-img").alt = baseName(hit.path);
  const { width, height } = hit.columns || {};
  const dims = width && height ? ` · ${width}×${height}` : "";
  $("viewer-caption").textContent = `${hit.path}${dims} · score ${hit.score.toFixed(3)}`;
  $("viewer-open").href = hit.image_url;
  $("viewer").showModal();
}

function closeViewer() {
  $("viewer").close();
  $("viewer-img").removeAttribute("src");
}

// -- image queries: upload, drag and drop, paste ------------------------------------------------

function useImage(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus("That is not an image file.", true);
    return;
  }
  readForm();
  state.image = file;
  state.like = null;
  showChip({ src: URL.createObjectURL(file), label: file.name || "pasted image" });
  search();
}

function clearImage() {
  state.image = null;
  state.like = null;
  $("file").value = "";
  showChip(null);
  search();
}

function setUpDropping() {
  const overlay = $("dropping");
  const hasFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    overlay.hidden = false;
  });
  overlay.addEventListener("dragleave", () => (overlay.hidden = true));
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    overlay.hidden = true;
    useImage(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = Array.from(event.clipboardData?.items || []).find((i) => i.type.startsWith("image/"));
    if (item) useImage(item.getAsFile());
  });
}

// -- start ------------------------------------------------------------------------------------

async function showInfo() {
  try {
    const response = await fetch("/api/info");
    if (!response.ok) return;
    const info = await response.json();
    const vectors = info.vector_index;
    const recall = vectors.kind !== "flat" && vectors.recall_at_10 !== null
      ? ` (recall@10 ${vectors.recall_at_10.toFixed(2)})` : "";
    const count = info.counts.images.toLocaleString();
    $("info").textContent = `${count} images · ${info.model.spec} · ${vectors.kind} index${recall}`;
    $("info").title = info.index;
  } catch (error) {
    // the page works without it
  }
}

function start() {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    readForm();
    search();
  });
  $("file").addEventListener("change", () => useImage($("file").files[0]));
  $("clear-image").addEventListener("click", clearImage);
  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer").addEventListener("click", (event) => {
    if (event.target === $("viewer")) closeViewer(); // a click on the backdrop
  });
  $("viewer-like").addEventListener("click", () => {
    const hit = viewing;
    closeViewer();
    if (hit) moreLike(hit);
  });
  window.addEventListener("popstate", () => {
    readHash();
    if (hasQuery()) run();
  });
  setUpDropping();
  showInfo();
  readHash();
  if (hasQuery()) run();
  else setStatus("Type a description, drop an image, or pick “More like this”.");
}

start();
