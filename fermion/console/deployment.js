// A deployment's page: replicas, live charts (requests, latency, errors, replicas), logs, events, revisions,
// and scale / update / roll back / delete.
import { api, can, clock, confirmDialog, date, duration, enc, errorBox, eventKind, every, field, fill, h, messageOf, notice, num, s, showError, state, statusBadge, t } from "./core.js";

// ---------------------------------------------------------------- charts

const COLORS = ["#1f6feb", "#b35900", "#8250df", "#1a7f37"];

function lineChart(title, points, series, unit) {
  const W = 600, H = 180, L = 48, R = 8, T = 10, B = 26;
  const values = points.flatMap((p) => series.map((x) => p[x.key])).filter((v) => v !== null && v !== undefined);
  const peak = values.length ? Math.max(...values) : 0;
  const top = peak > 0 ? niceMax(peak) : 1;
  const times = points.map((p) => Date.parse(p.t));
  const t0 = times.length ? Math.min(...times) : 0;
  const t1 = times.length ? Math.max(...times) : 1;
  const x = (time) => L + ((time - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "chart",
    "data-peak": String(peak), preserveAspectRatio: "none" });
  svg.append(s("title", {}, title));
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" }, num(v)));
  }
  if (times.length) {
    svg.append(s("text", { x: L, y: H - 6, class: "axis" }, clock(points[0].t)));
    svg.append(s("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" }, clock(points[points.length - 1].t)));
  }
  series.forEach((ser, i) => {
    let d = "";
    let pen = false;
    points.forEach((p, j) => {
      const v = p[ser.key];
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(times[j]).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
    });
    if (d) svg.append(s("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  });
  const last = points.length ? points[points.length - 1] : {};
  const legend = h("ul", { class: "legend" }, series.map((ser, i) => h("li", {},
    h("span", { class: "swatch", style: { background: COLORS[i % COLORS.length] } }),
    `${ser.label}: ${last[ser.key] == null ? t("common.none") : num(last[ser.key])}`)));
  return h("figure", { class: "chart-box", dataset: { chart: series.map((x) => x.key).join(",") } },
    h("figcaption", {}, h("strong", {}, title), " ",
      h("span", { class: "muted peak" }, t("chart.peak", { v: num(peak), unit }))),
    points.length ? svg : h("p", { class: "muted" }, t("chart.nodata")),
    legend);
}

function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// ---------------------------------------------------------------- deployment page

export function deploymentPage(main, name, mine) {
  const box = errorBox();
  const deep = can("deploy");  // replicas, metrics, logs, events and revisions need deploy: invoke sees the summary
  const summary = h("dl", { class: "summary" });
  const title = h("h1", {}, name);
  const replicasBody = h("tbody");
  const charts = h("div", { class: "charts" });
  const logs = h("pre", { class: "logs", tabindex: "0", "aria-label": t("deployment.logs") });
  const events = h("ol", { class: "events" });
  const revisionsBody = h("tbody");
  let current = null;

  const actions = h("section", { class: "card" }, h("h2", {}, t("deployment.actions")));
  if (can("deploy")) {
    const min = h("input", { type: "number", min: 0, step: 1, required: true, name: "min" });
    const max = h("input", { type: "number", min: 0, step: 1, required: true, name: "max" });
    const scaleBox = errorBox();
    const scaleForm = h("form", { class: "inline", onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api.patch(`/deployments/${enc(name)}`, { min_replicas: Number(min.value), max_replicas: Number(max.value) });
        showError(scaleBox, null);
        notice(t("deployment.scaled"));
        refresh();
      } catch (err) { showError(scaleBox, err); }
    } }, h("h3", {}, t("deployment.scale")), field(t("deployment.min"), min), field(t("deployment.max"), max),
    h("button", { type: "submit" }, t("deployment.scale_submit")), scaleBox);
    const source = h("input", { type: "text", name: "source", required: true, spellcheck: "false" });
    const sourceBox = errorBox();
    const sourceForm = h("form", { class: "inline", onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api.patch(`/deployments/${enc(name)}`, { source: source.value.trim() });
        showError(sourceBox, null);
        notice(t("deployment.updated"));
        refresh();
      } catch (err) { showError(sourceBox, err); }
    } }, h("h3", {}, t("deployment.update_source")), field(t("deployment.source"), source),
    h("button", { type: "submit" }, t("deployment.update_submit")), sourceBox);
    const deleteButton = h("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirmDialog(t("deployment.delete_confirm", { name }), t("deployment.delete")))) return;
      try {
        await api.del(`/deployments/${enc(name)}`);
        notice(t("deployment.deleted", { name }));
        location.hash = "#/overview";
      } catch (err) { notice(messageOf(err), "bad"); }
    } }, t("deployment.delete"));
    actions.append(scaleForm, sourceForm, h("div", { class: "row" }, deleteButton));
    mine.fillForms = (d) => {
      if (document.activeElement !== min && !min.dataset.touched) min.value = d.min_replicas;
      if (document.activeElement !== max && !max.dataset.touched) max.value = d.max_replicas;
      if (!source.dataset.touched && document.activeElement !== source) source.value = d.source;
    };
    for (const el of [min, max, source]) el.addEventListener("input", () => { el.dataset.touched = "1"; });
  }

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/overview" }, t("nav.overview"))),
    h("div", { class: "head" }, title, h("a", { class: "button", href: `#/playground/${enc(name)}` }, t("deployment.playground"))),
    box,
    h("section", { class: "card" }, summary),
    deep ? h("section", { class: "card" }, h("h2", {}, t("deployment.replicas")),
      h("div", { class: "scroll" }, h("table", { class: "replicas-table" },
        h("thead", {}, h("tr", {}, [t("replica.id"), t("replica.state"), t("replica.revision"), t("replica.uptime"), t("replica.pid")]
          .map((x) => h("th", { scope: "col" }, x)))),
        replicasBody))) : null,
    deep ? h("section", { class: "card" }, h("h2", {}, t("deployment.metrics")), charts) : null,
    actions.childNodes.length > 1 ? actions : null,
    deep ? h("section", { class: "card" }, h("h2", {}, t("deployment.logs")), logs) : null,
    deep ? h("section", { class: "card" }, h("h2", {}, t("deployment.events")), events) : null,
    deep ? h("section", { class: "card" }, h("h2", {}, t("deployment.revisions")),
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, [t("revision.number"), t("revision.source"), t("revision.created"), t("revision.note"), t("overview.actions")]
          .map((x) => h("th", { scope: "col" }, x)))),
        revisionsBody))) : null,
  );
  mine.onError = (err) => showError(box, err);

  async function refresh() {
    const base = `/deployments/${enc(name)}`;
    const [d, reps, hist, evs, revs] = await Promise.all(deep ? [
      api.get(base), api.get(`${base}/replicas`),
      api.get(`${base}/metrics?minutes=15`).catch(() => ({ points: [] })),
      api.get(`${base}/events?limit=50`).catch(() => ({ events: [] })),
      api.get(`${base}/revisions`),
    ] : [api.get(base), { replicas: [] }, { points: [] }, { events: [] }, { revisions: [] }]);
    if (!mine.alive) return;
    current = d;
    showError(box, null);
    fill(title, d.name, " ", statusBadge(d.status));
    const entries = [
      [t("deployment.status"), statusBadge(d.status)],
      [t("deployment.replicas_ready"), h("span", { class: "replicas" }, t("overview.ready_of", { ready: num(d.replicas.ready), desired: num(d.replicas.desired) }))],
      [t("deployment.scaling"), t("deployment.min_max", { min: num(d.min_replicas), max: num(d.max_replicas) })],
      [t("deployment.revision"), num(d.revision)],
      [t("deployment.restarts"), h("span", { class: "restarts" }, num(d.restarts ?? 0))],
      [t("deployment.visibility"), d.public ? t("deployment.public") : t("deployment.private")],
      [t("deployment.source"), h("code", {}, d.source)],
      [t("deployment.url"), h("code", {}, d.url)],
    ];
    fill(summary, entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    mine.fillForms?.(d);
    const now = Date.now();
    fill(replicasBody, reps.replicas.length ? reps.replicas.map((r) => h("tr", {},
      h("td", {}, h("code", {}, r.id)),
      h("td", {}, statusBadge(r.state), r.detail ? h("small", { class: "muted" }, ` ${r.detail}`) : null),
      h("td", { class: "num" }, num(r.revision)),
      h("td", {}, r.started_at ? duration((now - Date.parse(r.started_at)) / 1000) : t("common.none")),
      h("td", { class: "num" }, r.pid ?? t("common.none")))) : h("tr", {}, h("td", { colspan: 5 }, t("deployment.no_replicas"))));
    const pts = hist.points || [];
    fill(charts,
      lineChart(t("chart.rps"), pts, [{ key: "rps", label: t("chart.rps_short") }], t("unit.rps")),
      lineChart(t("chart.latency"), pts, [{ key: "p50_ms", label: "p50" }, { key: "p95_ms", label: "p95" }, { key: "p99_ms", label: "p99" }], t("unit.ms_short")),
      lineChart(t("chart.errors"), pts, [{ key: "errors_per_s", label: t("chart.errors_short") }], t("unit.rps")),
      lineChart(t("chart.replicas"), pts, [{ key: "ready", label: t("chart.ready") }, { key: "desired", label: t("chart.desired") }], ""));
    fill(events, evs.events.length ? evs.events.slice().reverse().map((e) => h("li", {},
      h("time", { datetime: e.created_at }, date(e.created_at)), " ", h("strong", { title: e.kind }, eventKind(e.kind)), " ", e.message))
      : h("li", { class: "muted" }, t("deployment.no_events")));
    fill(revisionsBody, revs.revisions.slice().reverse().map((r) => h("tr", {},
      h("td", { class: "num" }, num(r.number), r.number === d.revision ? h("span", { class: "badge st-ready" }, t("revision.current")) : null),
      h("td", {}, h("code", {}, r.source)),
      h("td", {}, date(r.created_at)),
      h("td", {}, r.note || ""),
      h("td", {}, can("deploy") && r.number !== d.revision ? h("button", { type: "button", class: "secondary small",
        "aria-label": t("revision.rollback_to", { n: r.number }),
        onclick: async () => {
          if (!(await confirmDialog(t("revision.rollback_confirm", { n: r.number }), t("revision.rollback")))) return;
          try {
            await api.post(`/deployments/${enc(name)}/rollback`, { revision: r.number });
            notice(t("revision.rolled_back", { n: r.number }));
            refresh();
          } catch (err) { notice(messageOf(err), "bad"); }
        } }, t("revision.rollback")) : null))));
  }
  every(mine, 3000, refresh);
  if (can("deploy")) {
    every(mine, 2000, async () => {
      const answer = await api.get(`/deployments/${enc(name)}/logs?lines=200`);
      if (!mine.alive) return;
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
      fill(logs, answer.lines.length ? answer.lines.map((l) => h("span", { class: "line" }, h("span", { class: "rid" }, `[${l.replica}] `), l.line, "\n"))
        : t("deployment.no_logs"));
      if (atBottom) logs.scrollTop = logs.scrollHeight;
    });
  }
}
