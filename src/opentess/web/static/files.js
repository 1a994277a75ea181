// The files page: uploads with a progress bar (XMLHttpRequest reports the bytes sent), one file
// after another, to the console's POST /files; then the list follows the files' status while
// any is waiting, by reading this page again and replacing only the rows that changed.
import { csrf, problemsIn } from "./console.js";

const form = document.getElementById("upload-form");
const input = document.getElementById("upload-file");
const processBox = document.getElementById("upload-process");
const button = document.getElementById("upload-button");
const cancel = document.getElementById("upload-cancel");
const box = document.getElementById("upload-progress-box");
const bar = document.getElementById("upload-progress");
const barLabel = document.getElementById("upload-progress-label");
const percent = document.getElementById("upload-percent");
const status = document.getElementById("upload-status");
const errors = document.getElementById("upload-errors");
const live = document.getElementById("files-live");
const maxBytes = Number(form.dataset.maxBytes);
const firstPage = !new URLSearchParams(window.location.search).get("page") ||
  new URLSearchParams(window.location.search).get("page") === "1";

let current = null; // the XMLHttpRequest under way
let polling = null;

function showErrors(lines) {
  if (!lines.length) {
    errors.hidden = true;
    errors.replaceChildren();
    return;
  }
  const ul = document.createElement("ul");
  for (const line of lines) ul.append(Object.assign(document.createElement("li"), { textContent: line }));
  errors.replaceChildren(ul);
  errors.hidden = false;
}

function progress(name, loaded, total, done = false) {
  const share = total ? Math.floor((loaded / total) * 100) : 0;
  bar.max = total || 1;
  bar.value = Math.min(loaded, total || 1);
  percent.textContent = `${share}%`;
  barLabel.textContent = `${done ? "Uploaded" : "Uploading"} ${name}`;
}

/** One file to the console's upload endpoint: {status, body} (status 0: no answer). */
function send(file) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    current = xhr;
    xhr.open("POST", form.dataset.url);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) progress(file.name, event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
    xhr.addEventListener("abort", () => resolve({ status: -1, body: null }));
    const data = new FormData();
    data.append("process", processBox.checked ? "true" : "false");
    data.append("file", file);
    xhr.send(data);
  });
}

async function uploadAll(files) {
  showErrors([]);
  const problems = [];
  const done = [];
  button.disabled = true;
  cancel.hidden = false;
  box.hidden = false;
  for (const [i, file] of files.entries()) {
    const which = files.length > 1 ? ` (${i + 1} of ${files.length})` : "";
    if (file.size > maxBytes) {
      problems.push(`${file.name}: ${form.dataset.tooLarge}`);
      continue;
    }
    progress(file.name, 0, file.size);
    status.textContent = `Uploading ${file.name}${which}…`;
    const answer = await send(file);
    if (answer.status === -1) {
      problems.push(`${file.name}: the upload was cancelled.`);
      break;
    }
    if (answer.status === 200 && answer.body) {
      progress(file.name, file.size, file.size, true);
      done.push(answer.body);
      status.textContent = `${file.name} uploaded${which}: ${answer.body.status === "waiting" ? "being processed" : answer.body.status}.`;
    } else if (answer.status === 0) {
      problems.push(`${file.name}: the upload broke off (the connection closed; a file above the limit is refused this way too).`);
    } else {
      problems.push(...problemsIn(answer.body, answer.status).map((line) => `${file.name}: ${line}`));
    }
  }
  current = null;
  button.disabled = false;
  cancel.hidden = true;
  showErrors(problems);
  if (done.length) {
    const names = done.map((f) => f.filename).join(", ");
    status.textContent = `Uploaded: ${names}.` + (problems.length ? " Some files were not: see below." : "");
    input.value = "";
    if (firstPage) await refresh();
    else window.location.assign(`${window.location.pathname}?notice=uploaded`);
  } else if (problems.length) {
    status.textContent = "Nothing was uploaded.";
    box.hidden = true;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (current) return;
  const files = [...input.files];
  if (!files.length) {
    showErrors(["Choose a file to upload first."]);
    input.focus();
    return;
  }
  uploadAll(files);
});

cancel.addEventListener("click", () => current?.abort());

// the list ------------------------------------------------------------------------------------------

/** Read this page again — the listing it shows, not the address of a form that failed — and put
 * in the rows that changed (the others keep their focus). */
async function refresh() {
  const region = document.getElementById("files-region");
  let doc = null;
  let refused = false;
  try {
    const response = await fetch(region.dataset.source || window.location.href, { credentials: "same-origin" });
    if (response.ok) doc = new DOMParser().parseFromString(await response.text(), "text/html");
    else refused = true; // signed out, or the page is gone: stop asking
  } catch { /* the network: the next tick tries again */ }
  const fresh = doc?.getElementById("files-region");
  if (!fresh) {
    if (!refused) watch();
    return;
  }
  const body = region.querySelector("tbody");
  const freshBody = fresh.querySelector("tbody");
  if (!body || !freshBody) {
    region.replaceWith(document.importNode(fresh, true));
    watch();
    return;
  }
  region.querySelector("[data-count]").textContent = fresh.querySelector("[data-count]").textContent;
  const old = new Map([...body.rows].map((row) => [row.dataset.id, row]));
  const seen = new Set();
  const said = [];
  let previous = null;
  for (const row of freshBody.rows) {
    seen.add(row.dataset.id);
    let mine = old.get(row.dataset.id);
    if (!mine) {
      mine = document.importNode(row, true);
      if (previous) previous.after(mine);
      else body.prepend(mine);
    } else if (mine.dataset.version !== row.dataset.version) {
      const focused = mine.contains(document.activeElement) ? document.activeElement.id : "";
      const replacement = document.importNode(row, true);
      if (mine.dataset.status !== row.dataset.status) said.push(`${row.dataset.name}: ${row.dataset.status}`);
      mine.replaceWith(replacement);
      mine = replacement;
      if (focused) document.getElementById(focused)?.focus();
    }
    previous = mine;
  }
  for (const [id, row] of old) if (!seen.has(id)) row.remove();
  if (said.length) live.textContent = said.join("; ");
  watch();
}

/** While a file is waiting, look again every second and a half. */
function watch() {
  if (polling !== null) return;
  if (!document.querySelector('#files-region tr[data-status="waiting"]')) return;
  polling = setTimeout(async () => {
    polling = null;
    await refresh();
  }, 1500);
}

watch();
document.getElementById("file-errors")?.focus();
