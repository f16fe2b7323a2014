// The job page: progress, events and metric charts, live while the job runs.
// Live updates come from GET /v1/jobs/{id}/events as Server-Sent Events; a server (or proxy)
// that answers that with the JSON list instead is polled with ?after= and /metrics.
"use strict";

(function (fl) {
  const FINAL = ["succeeded", "failed", "cancelled"];
  let job = fl.data.job;
  let lastEventId = 0;
  const points = {}; // metric name -> Map(step -> value): replays overwrite, never duplicate

  for (const [name, list] of Object.entries(fl.data.series || {})) {
    for (const p of list) addPoint(name, p.step, p.value);
  }
  for (const e of fl.data.events || []) lastEventId = Math.max(lastEventId, e.id);

  const lossCanvas = document.getElementById("chart-loss");
  const metricsCanvas = document.getElementById("chart-metrics");
  fl.charts.loss = fl.lineChart(lossCanvas, lossSeries(), "loss");
  fl.charts.metrics = fl.lineChart(metricsCanvas, otherSeries(), "value");
  fl.live = { mode: "none", events: 0, metrics: 0 };

  function addPoint(name, step, value) {
    if (typeof value !== "number" || typeof step !== "number") return;
    (points[name] = points[name] || new Map()).set(step, value);
  }

  function seriesOf(name) {
    const map = points[name] || new Map();
    return [...map.entries()].sort((a, b) => a[0] - b[0]).map(([x, y]) => ({ x, y }));
  }

  // One loss line per stage of the run when the page knows them (a generation run's SFT,
  // then DPO, ...: their losses are on different scales); points past them stay "loss".
  function lossSeries() {
    const all = seriesOf("loss");
    const stages = fl.data.stages || [];
    if (!stages.length) return { loss: all };
    const inside = (p, s) => p.x >= s.first && p.x <= s.last;
    const out = {};
    for (const s of stages) out[`loss (${s.label})`] = all.filter((p) => inside(p, s));
    const rest = all.filter((p) => !stages.some((s) => inside(p, s)));
    if (rest.length) out.loss = rest;
    return out;
  }

  function sync(chart, series) {
    Object.entries(series).forEach(([name, data]) => {
      let dataset = chart.data.datasets.find((d) => d.label === name);
      if (!dataset) {
        const color = fl.palette[chart.data.datasets.length % fl.palette.length]; // a new one
        dataset = { label: name, data: [], borderColor: color, backgroundColor: color, borderWidth: 2 };
        chart.data.datasets.push(dataset);
      }
      dataset.data = data;
    });
    chart.options.plugins.legend.display = chart.data.datasets.length > 1;
    chart.update("none");
  }

  function otherSeries() {
    const out = {};
    for (const name of Object.keys(points).sort()) if (name !== "loss") out[name] = seriesOf(name);
    return out;
  }

  function redraw() {
    sync(fl.charts.loss, lossSeries());
    const others = otherSeries();
    sync(fl.charts.metrics, others);
    document.getElementById("loss-empty").hidden = seriesOf("loss").length > 0;
    document.getElementById("metrics-empty").hidden = Object.keys(others).length > 0;
  }

  function refitText(refit) {
    if (refit.registered !== "refit") return `Not refitted: ${refit.reason}`;
    const epochs = `${refit.epochs} epoch${refit.epochs === 1 ? "" : "s"}`;
    return `Refitted on train + validation (${refit.train_examples} examples, ${epochs}).`;
  }

  function showJob(next) {
    job = next;
    const state = document.getElementById("job-state");
    state.textContent = job.state;
    state.className = `badge ${job.state}`;
    const percent = Math.round((job.progress || 0) * 1000) / 10;
    document.getElementById("job-bar").style.width = `${percent}%`;
    document.getElementById("job-percent").textContent = `${Math.round(percent)}%`;
    document.getElementById("job-message").textContent = job.message || "";
    document.getElementById("cancel-job").hidden = FINAL.includes(job.state);
    const result = document.getElementById("job-result");
    const parts = [];
    if (job.version) {
      const link = fl.h("a", { href: `/projects/${job.project}#models-panel`, id: "job-version" }, job.version);
      const promoted = job.result && job.result.promoted;
      parts.push("Registered ", link, promoted ? " and promoted to champion." : " (champion unchanged).");
      const refit = job.result && job.result.refit;
      if (refit) parts.push(" ", fl.h("span", { id: "job-refit" }, refitText(refit)));
    }
    if (job.error) parts.push(" ", fl.h("span", { class: "error-text" }, job.error));
    result.replaceChildren(...parts);
  }

  function addEvent(event) {
    if (!event || typeof event.id !== "number" || event.id <= lastEventId) return;
    lastEventId = event.id;
    fl.live.events += 1;
    const at = (event.at || "").slice(11, 19);
    const item = fl.h(
      "li",
      { "data-event-id": event.id },
      fl.h("span", { class: "muted small" }, at),
      " ",
      fl.h("span", { class: `badge ev-${event.kind}` }, event.kind),
      " ",
      event.message || ""
    );
    document.getElementById("events").append(item);
  }

  async function refreshJob() {
    showJob(await fl.api("GET", `/v1/jobs/${job.id}`));
  }

  async function loadMetrics() {
    const metrics = await fl.api("GET", `/v1/jobs/${job.id}/metrics`);
    for (const [name, list] of Object.entries(metrics.series || {})) {
      for (const p of list) addPoint(name, p.step, p.value);
    }
    fl.live.metrics = Object.values(points).reduce((n, m) => n + m.size, 0);
    redraw();
  }

  // --- Server-Sent Events -----------------------------------------------------------
  // Messages: state/log/cancel carry the event as the JSON list gives it; `metric` a point
  // {name, step, value}; `progress` the job row's {state, progress, message}. The stream
  // ends once the job is final.
  function listen() {
    let opened = false;
    const source = new EventSource(`/v1/jobs/${job.id}/events?after=${lastEventId}`);
    fl.live.source = source;
    const parse = (message) => {
      try {
        return JSON.parse(message.data);
      } catch (ignored) {
        return {};
      }
    };
    const finish = () => {
      source.close();
      fl.live.mode = "done";
      document.getElementById("job-live").textContent = "";
      refreshJob(); // the version it registered, the result
      loadMetrics(); // the stream sent every point already; this only reconciles
    };
    for (const kind of ["state", "log", "cancel"]) {
      source.addEventListener(kind, (message) => {
        const event = parse(message);
        addEvent({ ...event, kind: event.kind || kind });
        const state = event.data && event.data.state;
        if (state) showJob({ ...job, state });
      });
    }
    source.addEventListener("progress", (message) => {
      const row = parse(message);
      showJob({ ...job, state: row.state || job.state, progress: row.progress ?? job.progress,
        message: row.message ?? job.message });
      if (FINAL.includes(row.state)) finish();
    });
    source.addEventListener("metric", (message) => {
      const point = parse(message);
      addPoint(point.name, point.step, point.value);
      fl.live.metrics += 1;
      redraw();
    });
    source.onopen = () => {
      opened = true;
      fl.live.mode = "sse";
      document.getElementById("job-live").textContent = "· live";
    };
    source.onerror = () => {
      // Not a stream (an older server, a proxy): poll instead. A stream that drops is
      // reconnected by the browser itself, from the last id it received.
      if (fl.live.mode === "done") return;
      if (!opened || source.readyState === EventSource.CLOSED) {
        source.close();
        poll();
      }
    };
  }

  // --- Polling fallback ----------------------------------------------------------------
  async function poll() {
    fl.live.mode = "polling";
    document.getElementById("job-live").textContent = "· live (polling)";
    try {
      await refreshJob();
      const events = await fl.api("GET", `/v1/jobs/${job.id}/events?after=${lastEventId}`);
      events.forEach(addEvent);
      await loadMetrics();
    } catch (error) {
      fl.flash(error.message, "error");
    }
    if (FINAL.includes(job.state)) {
      fl.live.mode = "done";
      document.getElementById("job-live").textContent = "";
    } else {
      setTimeout(poll, 1000);
    }
  }

  document.getElementById("cancel-job").addEventListener("click", async () => {
    try {
      showJob(await fl.api("POST", `/v1/jobs/${job.id}/cancel`));
      fl.flash(`Cancel requested for job ${job.id}.`, "info");
    } catch (error) {
      fl.flash(error.message, "error");
    }
  });

  redraw();
  if (!FINAL.includes(job.state)) listen();
})(window.fineloop);
