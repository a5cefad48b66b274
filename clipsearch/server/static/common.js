// What the pages share: element lookup, the status line, file names, and requests whose
// answer is dropped when a newer request was sent meanwhile. Text from the server (paths,
// errors) only ever goes into textContent or attributes, never into HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let latestRequest = 0; // number of the newest request: older answers are dropped

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function baseName(path) {
  return path.split(/[\\/]/).pop();
}

// send() → fetch promise; render(data) gets the JSON of a successful, still newest answer.
async function showLatest(send, render, busyText) {
  const mine = ++latestRequest;
  setStatus(busyText);
  document.body.classList.add("busy");
  try {
    const response = await send();
    const data = await response.json().catch(() => ({}));
    if (mine !== latestRequest) return;
    if (!response.ok) {
      setStatus(data.error || `${response.status} ${response.statusText}`, true);
      return;
    }
    render(data);
  } catch (error) {
    if (mine === latestRequest) setStatus(`Cannot reach the server: ${error.message}`, true);
  } finally {
    if (mine === latestRequest) document.body.classList.remove("busy");
  }
}

// An element with properties set (className, textContent, title, ...) and children appended.
function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

function thumbnail(url, path) {
  return element("img", { src: url, alt: baseName(path), loading: "lazy", decoding: "async" });
}
