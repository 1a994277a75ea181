// The agent editor: add, move and remove fields; show the controls each type uses; preview
// the rendered instructions through the server (the sandbox that renders every run).
import { call, problemsOf } from "./console.js";

const form = document.getElementById("agent-form");
const list = document.getElementById("questions");
const template = document.getElementById("question-template");
const samples = document.getElementById("sample-fields");
const sampleValues = new Map();

const rows = () => [...list.querySelectorAll("[data-question]")];

function renumber() {
  rows().forEach((row, i) => {
    for (const el of row.querySelectorAll("[id], [name], [for], [aria-describedby]")) {
      for (const attr of ["id", "name", "for", "aria-describedby"]) {
        const value = el.getAttribute(attr);
        if (value) el.setAttribute(attr, value.replace(/q-\d+-/g, `q-${i}-`));
      }
    }
    const name = row.querySelector("[data-name]").value.trim();
    row.querySelector("[data-question-title]").textContent = `Field ${i + 1}${name ? `: ${name}` : ""}`;
  });
  buildSamples();
}

function showControls(row) {
  const type = row.querySelector("[data-type]").value;
  for (const el of row.querySelectorAll("[data-for]")) {
    el.hidden = !el.dataset.for.split(" ").includes(type);
  }
  const hint = row.querySelector("[data-default-hint]");
  if (hint) {
    hint.textContent = {
      multiselect: "Options, comma-separated",
      boolean: "true or false",
      array: "JSON, e.g. [1, 2]",
      object: "JSON, e.g. {\"a\": 1}",
      file: "File ids, comma-separated",
      select: "One of the options",
    }[type] || "Used when a caller sends nothing";
  }
}

function wire(row) {
  showControls(row);
  row.querySelector("[data-type]").addEventListener("change", () => { showControls(row); buildSamples(); });
  row.querySelector("[data-name]").addEventListener("input", () => renumber());
  row.querySelector("[data-remove]").addEventListener("click", () => {
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    renumber();
    (next?.querySelector("[data-name]") || document.getElementById("add-question")).focus();
  });
  for (const button of row.querySelectorAll("[data-move]")) {
    button.addEventListener("click", () => {
      const up = button.dataset.move === "-1";
      const other = up ? row.previousElementSibling : row.nextElementSibling;
      if (!other) return;
      if (up) other.before(row); else other.after(row);
      renumber();
      button.focus();
    });
  }
}

function buildSamples() {
  for (const input of samples.querySelectorAll("input")) sampleValues.set(input.dataset.field, input.value);
  samples.replaceChildren();
  rows().forEach((row, i) => {
    const name = row.querySelector("[data-name]").value.trim();
    if (!name) return;
    const type = row.querySelector("[data-type]").value;
    const wrap = document.createElement("div");
    wrap.className = "field";
    const label = document.createElement("label");
    label.htmlFor = `sample-${i}`;
    label.textContent = `${name} `;
    const hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = type;
    label.append(hint);
    const input = document.createElement("input");
    input.type = "text";
    input.id = `sample-${i}`;
    input.name = `sample-${name}`;
    input.dataset.field = name;
    input.value = sampleValues.get(name) ?? "";
    wrap.append(label, input);
    samples.append(wrap);
  });
}

document.getElementById("add-question").addEventListener("click", () => {
  const row = template.content.firstElementChild.cloneNode(true);
  list.append(row);
  wire(row);
  renumber();
  row.querySelector("[data-name]").focus();
});

const output = document.getElementById("preview-output");
const problemsBox = document.getElementById("preview-problems");
const previewButton = document.getElementById("preview-button");
previewButton.addEventListener("click", async () => {
  previewButton.disabled = true;
  problemsBox.hidden = true;
  output.textContent = "Rendering…";
  try {
    const response = await call(previewButton.dataset.url, { method: "POST", body: new FormData(form) });
    if (!response.ok) {
      showProblems(await problemsOf(response));
      return;
    }
    const body = await response.json();
    if (body.problems.length) showProblems(body.problems);
    else output.textContent = body.rendered || "(the instructions render as an empty text)";
  } catch (error) {
    showProblems([`The preview could not be asked for: ${error.message}`]);
  } finally {
    previewButton.disabled = false;
  }
});

function showProblems(problems) {
  output.textContent = "";
  const ul = document.createElement("ul");
  for (const p of problems) {
    const li = document.createElement("li");
    li.textContent = p;
    ul.append(li);
  }
  problemsBox.replaceChildren("The instructions cannot render yet:", ul);
  problemsBox.hidden = false;
}

rows().forEach(wire);
buildSamples();
document.getElementById("form-errors")?.focus();
