// opentess console: what every page shares. Plain module, no dependencies.

export const root = document.querySelector('meta[name="console-root"]')?.content ?? "/ui";
export const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

/** fetch() for the console's JSON endpoints: the session cookie plus the CSRF header. */
export function call(url, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("X-CSRF-Token", csrf);
  return fetch(url, { credentials: "same-origin", ...options, headers });
}

/** An API error answer ({message, errors}) in words, one line per problem. */
export async function problemsOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  return problemsIn(body, response.status);
}

/** The problems of an error body already read (null: it was not JSON). */
export function problemsIn(body, status) {
  if (body && body.errors) {
    return Object.entries(body.errors).flatMap(([field, msgs]) => msgs.map((m) => `${field}: ${m}`));
  }
  if (body && body.message) return [body.message];
  return [`The server answered ${status}.`];
}

export async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // no clipboard permission (http on another host): select the text for Ctrl+C instead
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  if (button) {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  }
}

function formatCredits(value) {
  if (value === null || value === undefined) return "—";
  return Number(value).toFixed(10).replace(/0+$/, "").replace(/\.$/, "") || "0";
}
export { formatCredits };

// a page that answers a form (a new token's secret): reloading it must not send the form again
if (document.querySelector("[data-answers-post]")) window.history.replaceState(null, "", window.location.href);

// [data-autosubmit]: a select that submits its form when changed (its button is then hidden)
for (const select of document.querySelectorAll("select[data-autosubmit]")) {
  select.addEventListener("change", () => select.form.requestSubmit());
}
for (const el of document.querySelectorAll("[data-js-hide]")) el.hidden = true;

// [data-copy]: copy the text of the element it names
for (const button of document.querySelectorAll("[data-copy]")) {
  button.addEventListener("click", () => {
    const source = document.getElementById(button.dataset.copy);
    if (source) copy(source.textContent.trim(), button);
  });
}

// form[data-confirm]: ask before submitting (forms a script puts in later included)
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

// the executions list: refresh the rows of running executions until they end
const live = document.querySelector("[data-live-url]");
if (live) {
  const refresh = async () => {
    const running = live.querySelectorAll('tr[data-active="true"]');
    if (!running.length) return;
    try {
      const response = await fetch(live.dataset.liveUrl, { credentials: "same-origin" });
      if (response.ok) {
        const { data } = await response.json();
        for (const row of data) {
          const tr = live.querySelector(`tr[data-id="${row.id}"]`);
          if (!tr) continue;
          const badge = tr.querySelector("[data-status]");
          badge.textContent = row.status;
          badge.className = `badge ${row.status}`;
          tr.querySelector("[data-credits]").textContent = formatCredits(row.credits);
          const tokens = tr.querySelector("[data-tokens]");
          if (tokens && row.prompt_tokens !== null) tokens.textContent = `${row.prompt_tokens} / ${row.completion_tokens}`;
          const active = row.status === "starting" || row.status === "running";
          tr.dataset.active = String(active);
          if (!active) tr.querySelector("[data-cancel]")?.remove();
        }
      }
    } catch { /* the next tick tries again */ }
    setTimeout(refresh, 1500);
  };
  setTimeout(refresh, 1500);
}

// a detail page of a running execution: reload once it has ended
const watched = document.querySelector("[data-watch-url]");
if (watched) {
  const poll = async () => {
    try {
      const response = await fetch(watched.dataset.watchUrl, { credentials: "same-origin" });
      if (response.ok) {
        const body = await response.json();
        if (body.status !== "starting" && body.status !== "running") {
          window.location.reload();
          return;
        }
      }
    } catch { /* try again */ }
    setTimeout(poll, 1500);
  };
  setTimeout(poll, 1500);
}
