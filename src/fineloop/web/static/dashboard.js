// Shared by every dashboard page: the page's data, JSON API calls, messages, chart helpers.
// Actions go through the same JSON API as any client; the login cookie authenticates them.
"use strict";

window.fineloop = window.fineloop || {};
(function (fl) {
  const dataNode = document.getElementById("page-data");
  fl.data = dataNode ? JSON.parse(dataNode.textContent || "{}") : {};
  fl.charts = fl.charts || {};
  fl.palette = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4b5563"];

  // A JSON API call; rejects with the server's message (and .status, .payload) on errors.
  fl.api = async function (method, path, body) {
    const options = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let payload = null;
    try {
      payload = await response.json();
    } catch (ignored) {
      payload = null;
    }
    if (!response.ok) {
      const message = (payload && payload.message) || `${response.status} ${response.statusText}`;
      const error = new Error(message);
      error.status = response.status;
      error.payload = payload;
      if (response.status === 401) {
        error.message = `${message} (log in again: /login)`;
      }
      throw error;
    }
    return payload;
  };

  // h("td", {class: "num"}, "text", child): DOM without innerHTML, so names stay text.
  fl.h = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };

  // A message under the header; `extra` (a node) is shown after it, e.g. a retry button.
  fl.flash = function (message, kind, extra) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.replaceChildren(fl.h("span", {}, message), extra || "");
    box.className = `flash ${kind || "info"}`;
    box.hidden = false;
  };

  fl.fmt = function (value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits ?? 3) : "—";
  };

  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#4b5563";
  Chart.defaults.maintainAspectRatio = false;

  // A line chart of {x, y} series over a linear x axis (training steps).
  fl.lineChart = function (canvas, series, yTitle) {
    return new Chart(canvas, {
      type: "line",
      data: {
        datasets: Object.entries(series).map(([name, points], i) => ({
          label: name,
          data: points,
          borderColor: fl.palette[i % fl.palette.length],
          backgroundColor: fl.palette[i % fl.palette.length],
          pointRadius: points.length > 60 ? 0 : 2,
          borderWidth: 2,
          tension: 0.2,
        })),
      },
      options: {
        animation: false,
        parsing: false,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: { type: "linear", title: { display: true, text: "step" } },
          y: { title: { display: !!yTitle, text: yTitle || "" } },
        },
        plugins: { legend: { display: Object.keys(series).length > 1 } },
      },
    });
  };
})(window.fineloop);
