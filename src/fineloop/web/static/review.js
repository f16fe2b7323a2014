// The review page: one queued interaction at a time, answered from the keyboard or the
// buttons, or rewritten in the editor (e). Each answer is an ordinary feedback event sent
// to the JSON API (same checks as any client), keyed so a double press stores it once. Keep `render` in step with
// templates/review.html, which draws the first interaction on the server.
"use strict";

(function (fl) {
  const data = fl.data;
  const base = `/v1/projects/${encodeURIComponent(data.project.name)}`;
  const items = data.items || [];
  const sent = new Map(); // interaction id -> what was sent ("picked doc3", "thumbs down")
  let at = 0;
  let busy = false;

  const fmt = (x) => (typeof x === "number" ? x.toFixed(3) : "—");

  function meta(it) {
    let text = `${it.reason}${typeof it.score === "number" ? " " + fmt(it.score) : ""}`;
    text += ` · ${it.model_version || "no version"}${it.variant ? ` (${it.variant})` : ""}`;
    if (it.disagrees_with.length) text += ` · answered differently by ${it.disagrees_with.join(", ")}`;
    return text;
  }

  function button(action, label, extra) {
    return fl.h("button", { class: `small-btn${extra || ""}`, "data-action": action }, label);
  }

  function render() {
    const box = document.getElementById("review-item");
    if (!box) return;
    const it = items[at];
    document.getElementById("review-position").textContent = String(at + 1);
    box.dataset.interaction = it.id;
    const done = sent.get(it.id);
    const shown = it.shown.length
      ? fl.h("ol", { class: "review-shown", id: "review-shown" }, it.shown.map((s) =>
          fl.h("li", { "data-item": s.id }, fl.h("kbd", {}, String(s.n)), " ", fl.h("b", {}, s.id), " ",
            s.selected ? fl.h("span", { class: "badge" }, "selected") : null, " ",
            fl.h("span", { class: "muted small" }, `probability ${fmt(s.probability)} · score ${fmt(s.score)}`), " ",
            fl.h("button", { class: "small-btn", "data-action": "pick", "data-n": s.n }, "Pick"),
            s.text ? fl.h("div", { class: "small text" }, s.text) : null)))
      : fl.h("p", { class: "text", id: "review-output" }, it.output);
    const actions = it.actions === "selection"
      ? [button("reject", "Reject all (x)", " danger")]
      : [button("up", "Thumbs up (1)"), button("down", "Thumbs down (x)", " danger")];
    if (it.edit) actions.push(button("edit", `${capitalized(it.edit.action)} (e)`));
    box.replaceChildren(
      fl.h("div", { class: "panel-head" }, fl.h("h2", {}, "Input"),
        fl.h("span", { class: "muted small", id: "review-meta" }, meta(it))),
      fl.h("p", { class: "text", id: "review-input" }, it.input),
      fl.h("h2", {}, "Shown"),
      shown,
      fl.h("div", { class: "inline", id: "review-actions" }, ...actions,
        button("skip", "Skip (s)"), button("prev", "Previous (k)"), button("next", "Next (j)"),
        fl.h("span", { class: "muted small", id: "review-sent" }, done ? `sent: ${done}` : "")),
    );
  }

  const capitalized = (word) => word.charAt(0).toUpperCase() + word.slice(1);

  function move(step) {
    if (!items.length) return;
    closeEditor();
    const next = at + step;
    if (next >= items.length) {
      const reload = fl.h("button", { class: "small-btn", onclick: () => window.location.reload() }, "Load the queue again");
      fl.flash(`End of this page: ${sent.size} answered here.`, "info", reload);
      return;
    }
    at = Math.max(0, next);
    render();
  }

  // An ordinary feedback event on the current interaction; `label` is what the page says.
  function answer(event, action, label) {
    const it = items[at];
    if (!it) return undefined;
    const body = Object.assign({
      interaction_id: it.id,
      idempotency_key: `review:${it.id}:${action}`,
      metadata: { source: "review page", reason: it.reason },
    }, event);
    return send(it, `${base}/feedback`, body, label);
  }

  // POST `body` to `path` about interaction `it`; on success, note `label` and go on.
  async function send(it, path, body, label) {
    if (busy) return;
    busy = true;
    try {
      await fl.api("POST", path, body);
      sent.set(it.id, label);
      closeEditor();
      document.getElementById("flash").hidden = true;
      move(1);
      if (at === items.indexOf(it)) render(); // the last one: show what was sent
    } catch (error) {
      fl.flash(error.message, "error");
    } finally {
      busy = false;
    }
  }

  function pick(n) {
    const it = items[at];
    const chosen = it && it.shown.find((s) => s.n === n);
    if (it && it.actions === "thumb" && n === 1) return answer({ kind: "thumb", value: "up" }, "up", "thumbs up");
    if (!chosen) return undefined;
    return answer({ kind: "selection", selected: [chosen.id] }, `pick${n}`, `picked ${chosen.id}`);
  }

  function reject() {
    const it = items[at];
    if (!it) return undefined;
    if (it.actions === "thumb") return answer({ kind: "thumb", value: "down" }, "down", "thumbs down");
    const all = it.shown.map((s) => s.id);
    return answer({ kind: "selection", rejected: all }, "reject", `rejected all ${all.length}`);
  }

  // The editor: the family's text to start from (a reply, NER spans as lines, the right
  // item ids), sent to POST .../review/{interaction}, which reads it as the family does.
  const editor = document.getElementById("review-editor");
  const editorText = document.getElementById("editor-text");
  const lookup = document.getElementById("catalog-lookup");
  const lookupQuery = document.getElementById("catalog-query");
  const found = document.getElementById("catalog-found");

  function openEditor() {
    const it = items[at];
    if (!it || !it.edit || !editor) return;
    document.getElementById("editor-title").textContent = `${capitalized(it.edit.action)} ${it.id}`;
    document.getElementById("editor-hint").textContent = it.edit.hint;
    editorText.value = it.edit.text;
    if (lookup) lookup.hidden = it.edit.action !== "label";
    if (found) found.replaceChildren();
    if (lookupQuery) lookupQuery.value = "";
    editor.hidden = false;
    editorText.focus();
  }

  function closeEditor() {
    if (editor) editor.hidden = true;
  }

  // A short digest of the text, so a double press stores it once and a new text anew.
  function digest(text) {
    let hash = 2166136261;
    for (let i = 0; i < text.length; i += 1) {
      hash ^= text.charCodeAt(i);
      hash = Math.imul(hash, 16777619) >>> 0;
    }
    return `${text.length}.${hash.toString(16)}`;
  }

  function saveEdit() {
    const it = items[at];
    if (!it || !it.edit || editor.hidden) return undefined;
    const text = editorText.value;
    const body = {
      text,
      idempotency_key: `review:${it.id}:${it.edit.action}:${digest(text)}`,
      metadata: { source: "review page", reason: it.reason },
    };
    const path = `${base}/review/${encodeURIComponent(it.id)}`;
    return send(it, path, body, it.edit.action === "label" ? "labelled" : "edited");
  }

  let lookupTimer = null;
  async function lookUp() {
    const words = lookupQuery.value.trim();
    if (words.length < 2) {
      found.replaceChildren();
      return;
    }
    try {
      const page = await fl.api("GET", `${base}/items?limit=10&contains=${encodeURIComponent(words)}`);
      if (lookupQuery.value.trim() !== words) return; // typed on meanwhile
      found.replaceChildren(...(page.items.length ? page.items.map((item) =>
        fl.h("li", {},
          fl.h("button", { class: "small-btn", "data-add": item.id }, "Add"), " ", fl.h("b", {}, item.id),
          fl.h("div", { class: "small text" }, item.text.length > 200 ? `${item.text.slice(0, 200)} …` : item.text)))
        : [fl.h("li", { class: "muted small" }, "no item holds these words")]));
    } catch (error) {
      fl.flash(error.message, "error");
    }
  }

  if (editor) {
    document.getElementById("editor-save").addEventListener("click", () => saveEdit());
    document.getElementById("editor-cancel").addEventListener("click", () => closeEditor());
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        saveEdit();
      } else if (event.key === "Escape") {
        event.preventDefault();
        closeEditor();
      }
    });
  }
  if (lookupQuery) {
    lookupQuery.addEventListener("input", () => {
      clearTimeout(lookupTimer);
      lookupTimer = setTimeout(lookUp, 250);
    });
    found.addEventListener("click", (event) => {
      const add = event.target.closest("button[data-add]");
      if (!add) return;
      const lines = editorText.value.split("\n").map((line) => line.trim()).filter(Boolean);
      if (!lines.includes(add.dataset.add)) lines.push(add.dataset.add);
      editorText.value = lines.join("\n");
      editorText.focus();
    });
  }

  const actions = {
    edit: () => openEditor(),
    pick: (b) => pick(Number(b.dataset.n)),
    reject: () => reject(),
    up: () => pick(1),
    down: () => reject(),
    skip: () => move(1),
    next: () => move(1),
    prev: () => move(-1),
  };

  document.addEventListener("click", (event) => {
    const target = event.target.closest("#review-item button[data-action]");
    if (target && actions[target.dataset.action]) actions[target.dataset.action](target);
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, select, textarea")) return;
    const key = event.key;
    if (key === "?") {
      const help = document.getElementById("review-help");
      help.hidden = !help.hidden;
    } else if (key === "j" || key === "s") {
      move(1);
    } else if (key === "k") {
      move(-1);
    } else if (key === "x") {
      reject();
    } else if (key === "e") {
      openEditor();
    } else if (/^[1-9]$/.test(key)) {
      pick(Number(key));
    } else {
      return;
    }
    event.preventDefault();
  });

  if (items.length) render();
})(window.fineloop);
