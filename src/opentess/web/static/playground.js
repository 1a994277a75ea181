// The playground: builds the same JSON body as POST /agents/{id}/execute takes, streams the
// execution events (SSE over fetch), stops a run, continues the conversation, and writes the
// same call as curl, Python or Node.
import { call, copy, formatCredits, problemsOf, root } from "./console.js";

const data = JSON.parse(document.getElementById("playground-data").textContent);
const inputs = document.getElementById("inputs");
const chat = document.getElementById("chat");
const status = document.getElementById("chat-status");
const composer = document.getElementById("composer");
const message = document.getElementById("message");
const send = document.getElementById("send");
const stop = document.getElementById("stop");
const fresh = document.getElementById("new-conversation");
const conversationLabel = document.getElementById("conversation-label");
const snippet = document.getElementById("snippet");

let rootId = data.root_id;
let running = null; // {controller, executionId}
let lang = "curl";

/** The agent's fields as the API takes them; throws with a message for a value that cannot be sent. */
function fields() {
  const body = {};
  for (const el of inputs.querySelectorAll("[data-field]")) {
    const name = el.dataset.field;
    const type = el.dataset.type;
    if (type === "multiselect") {
      const chosen = [...el.querySelectorAll("input:checked")].map((c) => c.value);
      if (chosen.length) body[name] = chosen;
    } else if (type === "ids") {
      // file_ids, memory_collections: lists of ids, as the API takes them
      const chosen = [...el.querySelectorAll("input:checked")].map((c) => Number(c.value));
      if (chosen.length) body[name] = chosen;
    } else if (type === "boolean") {
      body[name] = el.checked;
    } else {
      const text = el.value.trim();
      if (text === "") continue;
      if (type === "number") body[name] = Number(text);
      else if (type === "array" || type === "object") {
        try { body[name] = JSON.parse(text); } catch { throw new Error(`${name}: not valid JSON`); }
      } else if (type === "file") body[name] = text.split(",").map((s) => Number(s.trim()));
      else body[name] = text;
    }
  }
  return body;
}

function requestBody(text) {
  const body = { ...fields(), stream: true };
  if (data.type === "chat") body.messages = [{ role: "user", content: text }];
  if (rootId) body.root_id = rootId;
  return body;
}

function bubble(role, text = "") {
  const div = document.createElement("div");
  div.className = `bubble ${role}`;
  div.textContent = text;
  chat.append(div);
  div.scrollIntoView({ block: "nearest" });
  return div;
}

function setRunning(on) {
  chat.dataset.state = on ? "streaming" : "idle";
  send.disabled = on;
  stop.hidden = !on;
  chat.setAttribute("aria-busy", String(on));
}

function setConversation(id) {
  rootId = id;
  fresh.hidden = !id;
  conversationLabel.replaceChildren();
  if (id && data.type === "chat") {
    const link = document.createElement("a");
    link.href = `${root}/executions?root_id=${id}`;
    link.textContent = id;
    conversationLabel.append("Conversation ", link, " (the next message continues it)");
  }
  renderSnippet();
}

/** The execution events of an SSE body, as they arrive. */
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const lines = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
      if (lines.length) yield JSON.parse(lines.join("\n"));
    }
  }
}

async function showUsage(div, executionId) {
  const response = await fetch(`${data.execution_url}${executionId}`, { credentials: "same-origin" });
  if (!response.ok) return;
  const e = await response.json();
  const meta = document.createElement("span");
  meta.className = "meta";
  const tokens = e.prompt_tokens === null ? "no usage reported" : `${e.prompt_tokens} tokens in, ${e.completion_tokens} out`;
  const link = document.createElement("a");
  link.href = `${data.execution_page}${e.id}`;
  link.textContent = `execution ${e.id}`;
  const used = [];
  if (e.knowledge?.files?.length) used.push(`${e.knowledge.files.length} file${e.knowledge.files.length === 1 ? "" : "s"}`);
  if (e.memories?.used?.length) used.push(`${e.memories.used.length} memor${e.memories.used.length === 1 ? "y" : "ies"}`);
  if (e.sources?.length) used.push(`${e.sources.length} source${e.sources.length === 1 ? "" : "s"}`);
  const extra = used.length ? ` · used ${used.join(", ")}` : "";
  meta.append(`${e.model} · ${tokens} · ${formatCredits(e.credits)} credits · ${e.status}${extra} · `, link);
  meta.dataset.credits = e.credits ?? "";
  div.append(meta);
}

async function run(text) {
  let body;
  try {
    body = requestBody(text);
  } catch (error) {
    status.textContent = error.message;
    return;
  }
  if (data.type === "chat") bubble("user", text);
  const answer = bubble("assistant");
  const controller = new AbortController();
  running = { controller, executionId: null };
  setRunning(true);
  status.textContent = "Waiting for the model…";
  let executionId = null;
  let ended = "";
  try {
    const response = await call(data.execute_url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      answer.classList.add("error");
      answer.textContent = (await problemsOf(response)).join("\n");
      status.textContent = "The run was refused.";
      return;
    }
    status.textContent = "Streaming…";
    for await (const event of events(response)) {
      if (executionId === null) {
        executionId = event.id;
        running.executionId = executionId;
        if (data.type === "chat") setConversation(event.root_id);
      }
      if (event.status === "running") answer.textContent += event.output || "";
      else ended = event.status;
      if (event.status === "failed" || event.status === "cancelled") {
        const note = document.createElement("span");
        note.className = "meta";
        note.textContent = event.status === "failed" ? `Failed: ${event.error}` : "Stopped.";
        if (event.status === "failed") answer.classList.add("error");
        answer.append(note);
      }
    }
    status.textContent = ended === "completed" ? "Answer complete." : `The run ended: ${ended || "stream closed"}.`;
  } catch (error) {
    if (error.name === "AbortError") {
      status.textContent = "Stopped before the first token.";
      answer.append(Object.assign(document.createElement("span"), { className: "meta", textContent: "Stopped." }));
    } else {
      answer.classList.add("error");
      status.textContent = `The stream broke: ${error.message}`;
    }
  } finally {
    running = null;
    setRunning(false);
    if (executionId !== null) await showUsage(answer, executionId);
  }
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  if (running) return;
  const text = message ? message.value.trim() : "";
  if (message && !text) {
    status.textContent = "Write a message first.";
    message.focus();
    return;
  }
  if (message) message.value = "";
  run(text);
});

message?.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    composer.requestSubmit();
  }
});

stop.addEventListener("click", async () => {
  if (!running) return;
  if (running.executionId === null) {
    running.controller.abort(); // no id yet: leaving the stream cancels the run on the server
    return;
  }
  status.textContent = "Stopping…";
  const response = await call(`${data.execution_url}${running.executionId}/cancel`, { method: "POST" });
  if (!response.ok && response.status !== 409) status.textContent = (await problemsOf(response)).join(" ");
});

fresh.addEventListener("click", () => {
  chat.replaceChildren();
  setConversation(null);
  status.textContent = "New conversation.";
  message?.focus();
});

// "the same call from code"
function apiBase() {
  if (data.public_url) return data.public_url.replace(/\/$/, "");
  return window.location.origin + root.replace(/\/ui$/, "");
}

/** A JSON value as a Python literal (True, False, None). */
function python(value, indent = "") {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    const inner = indent + "    ";
    return `[\n${value.map((v) => inner + python(v, inner)).join(",\n")},\n${indent}]`;
  }
  if (typeof value === "object") {
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    const inner = indent + "    ";
    return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${python(v, inner)}`).join(",\n")},\n${indent}}`;
  }
  return JSON.stringify(value);
}

function renderSnippet() {
  let body;
  try {
    body = requestBody(message?.value.trim() || "Hello!");
  } catch (error) {
    snippet.textContent = error.message;
    return;
  }
  const url = `${apiBase()}/agents/${data.agent_id}/execute`;
  const json = JSON.stringify(body, null, 2);
  if (lang === "curl") {
    snippet.textContent =
      `curl -N ${url} \\\n  -H "Authorization: Bearer $OPENTESS_TOKEN" -H "Content-Type: application/json" \\\n` +
      `  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`;
  } else if (lang === "python") {
    snippet.textContent = `import json, os
import httpx

body = ${python(body)}
headers = {"Authorization": f"Bearer {os.environ['OPENTESS_TOKEN']}"}
with httpx.stream("POST", "${url}", json=body, headers=headers, timeout=None) as response:
    response.raise_for_status()
    for line in response.iter_lines():
        if line.startswith("data: "):
            event = json.loads(line[6:])
            if event["status"] == "running":
                print(event["output"], end="", flush=True)
            else:
                print(f"\\n[{event['status']}] credits: {event.get('credits')}")`;
  } else {
    snippet.textContent = `// Node 18+
const response = await fetch("${url}", {
  method: "POST",
  headers: { Authorization: \`Bearer \${process.env.OPENTESS_TOKEN}\`, "Content-Type": "application/json" },
  body: JSON.stringify(${json.replaceAll("\n", "\n  ")}),
});
if (!response.ok) throw new Error(await response.text());
const decoder = new TextDecoder();
let buffer = "";
for await (const chunk of response.body) {
  buffer += decoder.decode(chunk, { stream: true });
  let end;
  while ((end = buffer.indexOf("\\n\\n")) >= 0) {
    const line = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    if (!line.startsWith("data: ")) continue;
    const event = JSON.parse(line.slice(6));
    if (event.status === "running") process.stdout.write(event.output);
    else console.log(\`\\n[\${event.status}] credits: \${event.credits}\`);
  }
}`;
  }
}

for (const button of document.querySelectorAll("[data-lang]")) {
  button.addEventListener("click", () => {
    lang = button.dataset.lang;
    for (const other of document.querySelectorAll("[data-lang]")) other.setAttribute("aria-pressed", String(other === button));
    renderSnippet();
  });
}
inputs.addEventListener("input", renderSnippet);
inputs.addEventListener("change", renderSnippet);
message?.addEventListener("input", renderSnippet);
inputs.addEventListener("submit", (event) => event.preventDefault()); // Enter in a field sends nothing
renderSnippet();
