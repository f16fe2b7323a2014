// The review page: one queued interaction at a time, answered from the keyboard or the
// buttons. Each answer is an ordinary feedback event sent to the JSON API (same checks as
// any client), keyed so a double press stores it once. Keep `render` in step with
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

  function move(step) {
    if (!items.length) return;
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
  async function answer(event, action, label) {
    const it = items[at];
    if (!it || busy) return;
    busy = true;
    const body = Object.assign({
      interaction_id: it.id,
      idempotency_key: `review:${it.id}:${action}`,
      metadata: { source: "review page", reason: it.reason },
    }, event);
    try {
      await fl.api("POST", `${base}/feedback`, body);
      sent.set(it.id, label);
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

  const actions = {
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
    } else if (/^[1-9]$/.test(key)) {
      pick(Number(key));
    } else {
      return;
    }
    event.preventDefault();
  });

  if (items.length) render();
})(window.fineloop);
