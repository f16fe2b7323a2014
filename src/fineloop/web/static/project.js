// The project page: feedback charts, actions (train, cancel, promote, roll back, save a
// policy), live job rows, and the rollout panel. Every action is a call to the JSON API.
"use strict";

(function (fl) {
  const data = fl.data;
  const name = data.project.name;
  const base = `/v1/projects/${encodeURIComponent(name)}`;

  // --- Charts ---------------------------------------------------------------------------
  const daily = document.getElementById("chart-daily");
  if (daily) {
    fl.charts.daily = new Chart(daily, {
      data: {
        labels: data.daily.map((d) => d.day.slice(5)),
        datasets: [
          { type: "bar", label: "feedback events", data: data.daily.map((d) => d.count),
            backgroundColor: "#93c5fd", yAxisID: "y" },
          { type: "line", label: "mean reward", data: data.daily.map((d) => d.mean_reward),
            borderColor: "#16a34a", backgroundColor: "#16a34a", yAxisID: "reward",
            spanGaps: true, pointRadius: 2, tension: 0.2 },
        ],
      },
      options: {
        animation: false,
        scales: {
          y: { beginAtZero: true, title: { display: true, text: "events" } },
          reward: { position: "right", min: -1, max: 1, grid: { drawOnChartArea: false },
            title: { display: true, text: "mean reward" } },
        },
      },
    });
  }
  const rewards = document.getElementById("chart-rewards");
  if (rewards) {
    const bins = data.stats.histogram;
    fl.charts.rewards = new Chart(rewards, {
      type: "bar",
      data: {
        labels: bins.map((b) => b.low.toFixed(1)),
        datasets: [{ label: "feedback events", data: bins.map((b) => b.count),
          backgroundColor: bins.map((b) => (b.high <= 0 ? "#fca5a5" : "#86efac")) }],
      },
      options: {
        animation: false,
        plugins: { legend: { display: false } },
        scales: { x: { title: { display: true, text: "effective reward (bin start)" } },
          y: { beginAtZero: true } },
      },
    });
  }

  // --- Actions ----------------------------------------------------------------------------
  async function act(button, work) {
    button.disabled = true;
    try {
      await work();
    } catch (error) {
      fl.flash(error.message, "error");
      button.disabled = false;
    }
  }

  // The button is drawn disabled and enabled here, once a press can reach this handler
  // (before, the form would submit itself and reload the page).
  document.getElementById("start-training").disabled = false;
  document.getElementById("train-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const button = document.getElementById("start-training");
    const text = document.getElementById("overrides").value.trim();
    let overrides = {};
    try {
      overrides = text ? JSON.parse(text) : {};
    } catch (error) {
      fl.flash(`The overrides are not valid JSON: ${error.message}`, "error");
      return;
    }
    act(button, async () => {
      try {
        const job = await fl.api("POST", `${base}/train`, { overrides });
        window.location.assign(`/jobs/${job.id}`);
      } catch (error) {
        if (error.status === 409 && error.payload && error.payload.job_id) {
          const link = fl.h("a", { href: `/jobs/${error.payload.job_id}` }, ` open job ${error.payload.job_id}`);
          fl.flash(error.message, "error", link);
          button.disabled = false;
          return;
        }
        throw error;
      }
    });
  });

  async function promote(version, force) {
    const body = { version, reason: "promoted from the dashboard" };
    if (force) body.force = true;
    await fl.api("POST", `${base}/promote`, body);
    window.location.reload();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "cancel") {
      act(button, async () => {
        await fl.api("POST", `/v1/jobs/${button.dataset.job}/cancel`);
        window.location.reload();
      });
    } else if (action === "promote") {
      act(button, async () => {
        try {
          await promote(button.dataset.version, false);
        } catch (error) {
          if (error.status !== 409) throw error;
          const retry = fl.h("button", { class: "small-btn danger", id: "force-promote",
            onclick: () => act(retry, () => promote(button.dataset.version, true)) }, "Promote anyway");
          fl.flash(error.message, "error", retry);
          button.disabled = false;
        }
      });
    } else if (action === "save-policy") {
      savePolicy(button);
    } else if (action === "rollback") {
      act(button, async () => {
        await fl.api("POST", `${base}/rollback`, { alias: button.dataset.alias, reason: "rolled back from the dashboard" });
        window.location.reload();
      });
    }
  });

  // --- Policies: each textarea replaces its own policy with one PATCH -------------------
  async function savePolicy(button) {
    const field = button.dataset.policy;
    const area = document.getElementById(field);
    const status = document.getElementById(`${field}-status`);
    const say = (text, kind) => {
      status.textContent = text;
      status.className = `small ${kind}`;
    };
    let policy;
    try {
      policy = JSON.parse(area.value);
    } catch (error) {
      say(`not valid JSON: ${error.message}`, "error-text");
      return;
    }
    if (policy === null || typeof policy !== "object" || Array.isArray(policy)) {
      say("the policy must be a JSON object: { ... }", "error-text");
      return;
    }
    button.disabled = true;
    say("saving…", "muted");
    try {
      const project = await fl.api("PATCH", base, { [field]: policy });
      area.value = JSON.stringify(project[field], null, 2);  // with the defaults filled in
      say("saved", "ok-text");
    } catch (error) {
      say(error.message, "error-text");
    } finally {
      button.disabled = false;
    }
  }

  // --- Live job rows: progress in place; a new or finished job reloads the page ---------
  const shown = new Map(data.jobs.map((j) => [j.id, j.state]));
  async function watchJobs() {
    let delay = 5000;
    try {
      const jobs = await fl.api("GET", `${base}/jobs?limit=20`);
      let changed = false;
      for (const job of jobs) {
        const row = document.querySelector(`tr[data-job-id="${job.id}"]`);
        if (!shown.has(job.id) || shown.get(job.id) !== job.state) changed = true;
        if (row) {
          row.querySelector('[data-field="bar"]').style.width = `${(job.progress * 100).toFixed(1)}%`;
          row.querySelector('[data-field="message"]').textContent = job.message || "";
        }
        if (job.state === "queued" || job.state === "running") delay = 1500;
      }
      const typing = document.activeElement && ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
      if (changed && !typing) {
        window.location.reload();
        return;
      }
    } catch (error) {
      delay = 10000;
    }
    setTimeout(watchJobs, delay);
  }
  setTimeout(watchJobs, 1500);

  // --- Rollout ----------------------------------------------------------------------------
  const h = fl.h;
  const box = document.getElementById("rollout");
  const targets = [
    ...data.aliases.map((a) => a.alias),
    ...data.versions.map((v) => v.version),
  ];

  function pct(x) {
    return typeof x === "number" ? `${(x * 100).toFixed(1)}%` : "—";
  }

  function targetSelect(selected) {
    return h("select", { name: "target" }, targets.map((t) => h("option", { value: t, selected: t === selected }, t)));
  }

  function noRollout(last) {
    const challengers = data.versions.filter((v) => !v.aliases.includes("champion"));
    const select = targetSelect(challengers.length ? challengers[challengers.length - 1].version : "champion");
    const weight = h("input", { type: "number", min: 1, max: 99, value: 10, name: "weight", class: "short" });
    const start = h("button", { class: "primary", id: "start-rollout" }, "Start rollout");
    start.addEventListener("click", () =>
      act(start, () => putRollout([
        { name: "champion", target: "champion", weight: 1 - weight.value / 100 },
        { name: "challenger", target: select.value, weight: weight.value / 100 },
      ])));
    const parts = [
      h("p", { id: "no-rollout" }, "No rollout: all traffic goes to the champion."),
      h("div", { class: "inline" }, "Send ", weight, "% of traffic to ", select, start),
    ];
    if (last && last.id) {
      parts.push(h("h3", {}, `Last rollout: ${last.state || "ended"} ${(last.ended_at || "").replace("T", " ").slice(0, 16)}`),
        historyList(last));
    }
    box.replaceChildren(...parts);
  }

  function historyList(rollout) {
    return h("ol", { class: "events", id: "rollout-history" }, (rollout.history || []).slice().reverse().map((e) =>
      h("li", {}, h("span", { class: "muted small" }, (e.at || "").replace("T", " ").slice(0, 16)), " ",
        h("span", { class: "badge" }, e.action), " ", e.reason || "",
        e.weights ? h("span", { class: "muted small" }, ` ${JSON.stringify(e.weights)}`) : "")));
  }

  function verdictOf(c) {
    if (!c || typeof c.difference !== "number") {
      const needed = c && c.min_samples ? `: each variant needs ${c.min_samples} judged samples` : "";
      return `No comparison yet${needed}.`;
    }
    const ci = typeof c.ci_low === "number" ? ` [${fl.fmt(c.ci_low)}, ${fl.fmt(c.ci_high)}]` : "";
    const kind = c.sequential ? " (sequential)" : "";
    let text = `${c.challenger} − ${c.control} on ${c.metric}: ${fl.fmt(c.difference)}${ci}, p = ${fl.fmt(c.p_value)}${kind}; `;
    text += c.significant ? `significant: ${c.better} is better` : "no significant difference";
    if (c.enough_samples === false) text += ` (fewer than ${c.min_samples} judged samples per variant so far)`;
    return text;
  }

  async function putRollout(variants) {
    await fl.api("PUT", `${base}/rollout`, { variants });
    fl.flash("Rollout saved.", "info");
    await loadRollout();
  }

  function showRollout(rollout) {
    const weights = rollout.variants.map((v) =>
      h("input", { type: "number", min: 0, max: 100, step: "any", class: "short",
        value: Math.round(v.weight * 1000) / 10, "data-variant": v.name }));
    const variants = h("table", { class: "grid", id: "rollout-variants" },
      h("thead", {}, h("tr", {}, h("th", {}, "Variant"), h("th", {}, "Target"), h("th", {}, "Version"), h("th", {}, "Weight %"))),
      h("tbody", {}, rollout.variants.map((v, i) =>
        h("tr", {}, h("td", { class: "strong" }, v.name), h("td", {}, v.target), h("td", {}, v.version || "—"), h("td", {}, weights[i])))));
    const metrics = h("table", { class: "grid", id: "rollout-metrics" },
      h("thead", {}, h("tr", {}, ["Variant", "Interactions", "Feedback", "Mean reward", "Acceptance", "95% CI"].map((t) => h("th", {}, t)))),
      h("tbody", {}, (rollout.metrics || []).map((m) =>
        h("tr", {}, h("td", { class: "strong" }, m.variant), h("td", { class: "num" }, m.interactions),
          h("td", { class: "num" }, m.feedback), h("td", { class: "num" }, fl.fmt(m.mean_reward)),
          h("td", { class: "num" }, pct(m.acceptance_rate)),
          h("td", { class: "num small" }, typeof m.ci_low === "number" ? `[${fl.fmt(m.ci_low)}, ${fl.fmt(m.ci_high)}]` : "—")))));
    const verdict = verdictOf(rollout.comparison);
    const policy = rollout.policy || {};
    const save = h("button", { class: "primary", id: "save-weights" }, "Save weights");
    save.addEventListener("click", () => act(save, () => putRollout(rollout.variants.map((v, i) =>
      ({ name: v.name, target: v.target, weight: Number(weights[i].value) / 100 })))));
    const end = h("button", { class: "danger", id: "end-rollout" }, "End rollout");
    end.addEventListener("click", () => act(end, async () => {
      await fl.api("DELETE", `${base}/rollout`);
      fl.flash("Rollout ended: all traffic goes to the champion.", "info");
      await loadRollout();
    }));
    const since = (rollout.started_at || "").replace("T", " ").slice(0, 16);
    const rules = `decides on ${policy.metric || "?"}; auto rollback ${policy.auto_rollback ? "on" : "off"}, auto promote ${policy.auto_promote ? "on" : "off"}`;
    box.replaceChildren(h("p", { class: "muted small" }, `Active since ${since} UTC; ${rules}.`), variants,
      h("div", { class: "inline" }, save, end), h("h3", {}, "Online metrics"), metrics,
      h("p", { id: "rollout-verdict" }, verdict), h("h3", {}, "History"), historyList(rollout));
  }

  async function loadRollout() {
    try {
      const rollout = await fl.api("GET", `${base}/rollout`);
      const running = rollout && rollout.active !== false && Array.isArray(rollout.variants) && rollout.variants.length;
      if (running) showRollout(rollout);
      else noRollout(rollout);
    } catch (error) {
      if (error.status === 404) noRollout();
      else box.replaceChildren(h("p", { class: "error-text" }, error.message));
    }
  }
  loadRollout();

  // --- Search index: one line, polled while a build runs ------------------------------
  const indexLine = document.getElementById("index-status");
  function describe(v) {
    const items = v.items_total == null ? "" : ` ${v.items_indexed}/${v.items_total} items`;
    const state = v.state.replace("_", " ");
    return `${v.version} ${state}${items}${v.error ? ` (${v.error})` : ""}`;
  }
  async function loadIndex() {
    try {
      const status = await fl.api("GET", `${base}/index`);
      const serving = status.serving ? `serving ${status.serving}` : "not serving yet";
      indexLine.textContent = `Search index: ${serving} · ${status.versions.map(describe).join(" · ")}`;
      const busy = status.versions.some((v) => ["queued", "loading_model", "indexing"].includes(v.state));
      if (busy) setTimeout(loadIndex, 3000);
    } catch (error) {
      indexLine.textContent = `Search index: ${error.message}`;
    }
  }
  if (indexLine) loadIndex();
})(window.fineloop);
