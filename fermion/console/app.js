// The Fermion web console: plain ES modules, no build step, no third-party code.
// It talks to the platform's REST API (/api/v1) and the gateway (/run/<name>) only.

const LANGS = ["en", "zh-CN", "es"];
const TOKEN_KEY = "fermion.token";
const LANG_KEY = "fermion.lang";
const SCOPES = ["invoke", "deploy", "admin"];

const state = { token: sessionStorage.getItem(TOKEN_KEY), me: null, lang: "en", catalog: {}, flash: null };
let page = { timers: [], alive: false };

// ---------------------------------------------------------------- i18n

function pickLang() {
  const saved = localStorage.getItem(LANG_KEY);
  if (LANGS.includes(saved)) return saved;
  for (const wanted of navigator.languages || [navigator.language || "en"]) {
    const lower = String(wanted).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("es")) return "es";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

async function loadCatalog(lang) {
  const answer = await fetch(new URL(`./i18n/${lang}.json`, import.meta.url));
  state.catalog = await answer.json();
  state.lang = lang;
  document.documentElement.lang = lang;
}

function t(key, vars = {}) {
  let text = state.catalog[key];
  if (text === undefined) return key;
  for (const [name, value] of Object.entries(vars)) text = text.replaceAll(`{${name}}`, String(value));
  return text;
}

function tOr(key, fallback) {
  return key in state.catalog ? state.catalog[key] : fallback;
}

function num(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return t("common.none");
  const options = Math.abs(value) > 0 && Math.abs(value) < 1
    ? { maximumSignificantDigits: 3 } : { maximumFractionDigits: digits };
  return new Intl.NumberFormat(state.lang, options).format(value);
}

function date(iso) {
  if (!iso) return t("common.none");
  return new Intl.DateTimeFormat(state.lang, { dateStyle: "medium", timeStyle: "medium" }).format(new Date(iso));
}

function clock(iso) {
  return new Intl.DateTimeFormat(state.lang, { timeStyle: "medium" }).format(new Date(iso));
}

function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const n = (v) => new Intl.NumberFormat(state.lang).format(v);
  if (s < 60) return t("duration.s", { s: n(s) });
  if (s < 3600) return t("duration.m", { m: n(Math.floor(s / 60)), s: n(s % 60) });
  if (s < 86400) return t("duration.h", { h: n(Math.floor(s / 3600)), m: n(Math.floor((s % 3600) / 60)) });
  return t("duration.d", { d: n(Math.floor(s / 86400)), h: n(Math.floor((s % 86400) / 3600)) });
}

function translateStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  document.title = t("app.title");
}

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  for (const child of children.flat()) if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

let labelSeq = 0;
function field(labelText, control, hint) {
  const id = control.id || `f${++labelSeq}`;
  control.id = id;
  const hintEl = hint ? h("small", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  if (control.type === "checkbox" || control.type === "radio") {
    return h("div", { class: "field check" }, control, h("label", { for: id }, labelText), hintEl);
  }
  return h("div", { class: "field" }, h("label", { for: id }, labelText), control, hintEl);
}

function errorBox() {
  return h("div", { class: "error", role: "alert", hidden: true });
}

function showError(box, err) {
  box.textContent = err ? messageOf(err) : "";
  box.hidden = !err;
}

function notice(text, kind = "ok") {
  const el = document.getElementById("notice");
  el.className = `notice ${kind}`;
  el.textContent = text;
  clearTimeout(notice.timer);
  notice.at = Date.now();
  notice.timer = setTimeout(() => { el.textContent = ""; el.className = "notice"; }, 6000);
}

function confirmDialog(text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel || t("common.confirm");
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

function copyButton(getText) {
  const button = h("button", { type: "button", class: "secondary small" }, t("common.copy"));
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(getText());
      button.textContent = t("common.copied");
    } catch {
      button.textContent = t("common.copy_failed");
    }
    setTimeout(() => { button.textContent = t("common.copy"); }, 2000);
  });
  return button;
}

function statusBadge(status) {
  return h("span", { class: `badge st-${status}` }, tOr(`status.${status}`, status));
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function messageOf(err) {
  if (err instanceof ApiError) return err.message;
  if (err instanceof TypeError) return t("error.network");
  return String(err && err.message ? err.message : err);
}

async function errorFrom(answer) {
  let body = null;
  try { body = await answer.json(); } catch { /* not JSON */ }
  if (answer.status === 429) return new ApiError(429, t("error.busy"), body);
  let message = body && (body.message || (typeof body.error === "string" && body.error !== "" ? body.error : null));
  if (body && Array.isArray(body.detail) && body.detail.length) {
    message = `${message || ""} ${body.detail.map((d) => (d.field ? `${d.field}: ${d.message}` : d.message || JSON.stringify(d))).join("; ")}`.trim();
  }
  return new ApiError(answer.status, message || t("error.http", { status: answer.status }), body);
}

function signOutWith(messageKey) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  state.flash = messageKey ? t(messageKey) : null;
  if (location.hash !== "#/signin") location.hash = "#/signin";
  else render();
}

async function request(method, path, { body, headers = {}, raw = false, token = state.token, signal } = {}) {
  const init = { method, headers: { ...headers }, signal };
  if (token) init.headers.authorization = `Bearer ${token}`;
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  if (answer.status === 401 && token === state.token && state.token) {
    signOutWith("signin.expired");
    throw new ApiError(401, t("signin.expired"));
  }
  if (raw) return answer;
  if (!answer.ok) throw await errorFrom(answer);
  if (answer.status === 204) return null;
  return answer.json();
}

const api = {
  get: (path) => request("GET", `/api/v1${path}`),
  post: (path, body) => request("POST", `/api/v1${path}`, { body }),
  patch: (path, body) => request("PATCH", `/api/v1${path}`, { body }),
  del: (path) => request("DELETE", `/api/v1${path}`),
};

function can(scope) {
  if (!state.me) return false;
  const have = Math.max(...state.me.scopes.map((x) => SCOPES.indexOf(x)));
  return have >= SCOPES.indexOf(scope);
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- pages and routing

function every(ms, fn) {
  const mine = page;
  const tick = async () => {
    if (!mine.alive) return;
    try { await fn(); } catch (err) { if (mine.alive && !(err instanceof ApiError && err.status === 401)) mine.onError?.(err); }
    if (mine.alive) mine.timers.push(setTimeout(tick, ms));
  };
  tick();
}

function newPage() {
  if (Date.now() - (notice.at || 0) > 1500) {  // a message from a page left a while ago is stale
    const el = document.getElementById("notice");
    el.textContent = "";
    el.className = "notice";
  }
  page.alive = false;
  for (const timer of page.timers) clearTimeout(timer);
  page.controller?.abort();
  page = { timers: [], alive: true, controller: new AbortController() };
  return page;
}

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return { name: parts[0] || "overview", arg: parts[1] };
}

async function render() {
  const main = document.getElementById("main");
  const mine = newPage();
  let { name, arg } = route();
  if (!state.token && name !== "signin") {
    location.hash = "#/signin";
    return;
  }
  if (state.token && !state.me && name !== "signin") {
    try {
      state.me = await request("GET", "/api/v1/whoami");
    } catch (err) {
      if (!mine.alive) return;
      if (err.status === 401) return;
      fill(main, h("h1", {}, t("app.title")), h("p", { class: "error", role: "alert" }, messageOf(err)));
      return;
    }
    if (!mine.alive) return;
  }
  updateHeader();
  const pages = { signin: signinPage, overview: overviewPage, deployments: deploymentPage, playground: playgroundPage,
    new: newPage_, tokens: tokensPage, audit: auditPage };
  if (!pages[name] || ((name === "deployments" || name === "playground") && !arg)) name = "overview";
  if ((name === "tokens" || name === "audit") && !can("admin")) name = "overview";
  if (name === "new" && !can("deploy")) name = "overview";
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.route === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  main.dataset.page = name;
  pages[name](main, arg, mine);
}

function updateHeader() {
  const signedIn = Boolean(state.token && state.me);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !signedIn;
  const who = document.getElementById("who");
  who.hidden = !signedIn;
  if (signedIn) who.textContent = t("app.signed_in_as", { name: state.me.name, scopes: state.me.scopes.join(", ") });
  for (const link of document.querySelectorAll("#nav [data-scope]")) link.hidden = !can(link.dataset.scope);
}

// ---------------------------------------------------------------- sign-in

function signinPage(main) {
  const input = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const box = errorBox();
  if (state.flash) {
    box.textContent = state.flash;
    box.hidden = false;
    state.flash = null;
  }
  const form = h("form", { class: "card narrow", onsubmit: async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    try {
      const me = await request("GET", "/api/v1/whoami", { token });
      sessionStorage.setItem(TOKEN_KEY, token);
      state.token = token;
      state.me = me;
      location.hash = "#/overview";
    } catch (err) {
      showError(box, err.status === 401 ? t("signin.invalid") : err);
    }
  } },
  h("h1", {}, t("signin.title")),
  h("p", {}, t("signin.intro")),
  box,
  field(t("signin.token"), input, t("signin.token_hint")),
  h("button", { type: "submit" }, t("signin.submit")));
  main.append(form);
  input.focus();
}

// ---------------------------------------------------------------- overview

function overviewPage(main, _arg, mine) {
  const body = h("tbody");
  const box = errorBox();
  const updated = h("p", { class: "muted" });
  main.append(
    h("div", { class: "head" }, h("h1", {}, t("overview.title")),
      can("deploy") ? h("a", { class: "button", href: "#/new" }, t("nav.new")) : null),
    box,
    h("div", { class: "scroll" }, h("table", {},
      h("caption", { class: "sr-only" }, t("overview.title")),
      h("thead", {}, h("tr", {},
        [t("overview.name"), t("overview.status"), t("overview.replicas"), t("overview.rps"), t("overview.p99"),
          t("overview.errors"), t("overview.actions")].map((x) => h("th", { scope: "col" }, x)))),
      body)),
    updated,
  );
  mine.onError = (err) => showError(box, err);
  every(3000, async () => {
    const [list, metrics] = await Promise.all([api.get("/deployments"), api.get("/metrics?minutes=5").catch(() => ({ deployments: {} }))]);
    if (!mine.alive) return;
    showError(box, null);
    const rows = list.deployments.map((d) => {
      const m = metrics.deployments?.[d.name] || {};
      return h("tr", { dataset: { deployment: d.name } },
        h("th", { scope: "row" }, h("a", { href: `#/deployments/${enc(d.name)}` }, d.name)),
        h("td", {}, statusBadge(d.status)),
        h("td", { class: "replicas" }, t("overview.ready_of", { ready: num(d.replicas.ready), desired: num(d.replicas.desired) })),
        h("td", { class: "rps num" }, num(m.rps ?? null)),
        h("td", { class: "num" }, m.p99_ms == null ? t("common.none") : t("unit.ms", { v: num(m.p99_ms) })),
        h("td", { class: "num" }, num(m.errors_per_s ?? null)),
        h("td", {}, h("a", { href: `#/playground/${enc(d.name)}` }, t("overview.try"))));
    });
    fill(body, rows.length ? rows : h("tr", {}, h("td", { colspan: 7 }, t("overview.empty"))));
    updated.textContent = t("common.updated", { time: clock(new Date().toISOString()) });
  });
}

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
    h("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }),
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

function deploymentPage(main, name, mine) {
  const box = errorBox();
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
    h("section", { class: "card" }, h("h2", {}, t("deployment.replicas")),
      h("div", { class: "scroll" }, h("table", { class: "replicas-table" },
        h("thead", {}, h("tr", {}, [t("replica.id"), t("replica.state"), t("replica.revision"), t("replica.uptime"), t("replica.pid")]
          .map((x) => h("th", { scope: "col" }, x)))),
        replicasBody))),
    h("section", { class: "card" }, h("h2", {}, t("deployment.metrics")), charts),
    actions.childNodes.length > 1 ? actions : null,
    can("deploy") ? h("section", { class: "card" }, h("h2", {}, t("deployment.logs")), logs) : null,
    h("section", { class: "card" }, h("h2", {}, t("deployment.events")), events),
    h("section", { class: "card" }, h("h2", {}, t("deployment.revisions")),
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, [t("revision.number"), t("revision.source"), t("revision.created"), t("revision.note"), t("overview.actions")]
          .map((x) => h("th", { scope: "col" }, x)))),
        revisionsBody))),
  );
  mine.onError = (err) => showError(box, err);

  async function refresh() {
    const base = `/deployments/${enc(name)}`;
    const [d, reps, hist, evs, revs] = await Promise.all([
      api.get(base), api.get(`${base}/replicas`),
      api.get(`${base}/metrics?minutes=15`).catch(() => ({ points: [] })),
      api.get(`${base}/events?limit=50`).catch(() => ({ events: [] })),
      api.get(`${base}/revisions`),
    ]);
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
      h("time", { datetime: e.created_at }, date(e.created_at)), " ", h("strong", {}, e.kind), " ", e.message))
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
  every(3000, refresh);
  if (can("deploy")) {
    every(2000, async () => {
      const answer = await api.get(`/deployments/${enc(name)}/logs?lines=200`);
      if (!mine.alive) return;
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
      fill(logs, answer.lines.length ? answer.lines.map((l) => h("span", { class: "line" }, h("span", { class: "rid" }, `[${l.replica}] `), l.line, "\n"))
        : t("deployment.no_logs"));
      if (atBottom) logs.scrollTop = logs.scrollHeight;
    });
  }
}

// ---------------------------------------------------------------- playground

function resolveRef(doc, schema) {
  let out = schema || {};
  for (let i = 0; i < 10 && out.$ref; i++) {
    const path = out.$ref.replace(/^#\//, "").split("/");
    out = path.reduce((node, key) => (node ? node[key] : undefined), doc) || {};
  }
  return out;
}

function kindOf(doc, schema) {
  let sch = resolveRef(doc, schema);
  const options = sch.anyOf || sch.oneOf;
  if (options) {
    const real = options.map((o) => resolveRef(doc, o)).filter((o) => o.type !== "null");
    if (real.length === 1) sch = real[0];
    else return "json";
  }
  if (sch.format === "binary") return "file";
  if (sch.type === "string") return "string";
  if (sch.type === "integer") return "integer";
  if (sch.type === "number") return "number";
  if (sch.type === "boolean") return "boolean";
  return "json";
}

function endpointsOf(doc) {
  const out = [];
  for (const [path, methods] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(methods)) {
      const meta = op["x-fermion"];
      if (!meta) continue;
      const info = { name: meta.endpoint, path, method: method.toUpperCase(), stream: Boolean(meta.stream),
        files: meta.files || [], summary: op.summary || "", params: [] };
      if (info.method === "GET") {
        for (const p of op.parameters || []) info.params.push({ name: p.name, required: p.required, schema: p.schema || {} });
      } else {
        const content = op.requestBody?.content || {};
        const multipart = content["multipart/form-data"];
        info.multipart = Boolean(multipart) && info.files.length > 0;
        const schema = resolveRef(doc, (multipart || content["application/json"] || {}).schema);
        const required = new Set(schema.required || []);
        const order = meta.params || Object.keys(schema.properties || {});
        for (const pname of order) {
          const prop = schema.properties?.[pname];
          if (prop) info.params.push({ name: pname, required: required.has(pname), schema: prop });
        }
      }
      for (const p of info.params) {
        p.kind = info.files.includes(p.name) ? "file" : kindOf(doc, p.schema);
        const items = resolveRef(doc, p.schema).items;
        p.multiple = p.kind === "file" && (resolveRef(doc, p.schema).type === "array" || Boolean(items));
      }
      out.push(info);
    }
  }
  return out;
}

function pyLiteral(value) {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pyLiteral).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyLiteral(v)}`).join(", ")}}`;
}

function shellQuote(text) {
  return `'${String(text).replaceAll("'", "'\\''")}'`;
}

function playgroundPage(main, name, mine) {
  const box = errorBox();
  const select = h("select", { name: "endpoint" });
  const formArea = h("div");
  const result = h("div", { class: "result", "aria-live": "polite" });
  const curl = h("pre", { class: "snippet", tabindex: "0" });
  const python = h("pre", { class: "snippet", tabindex: "0" });
  const pgTitle = h("h1", {}, t("playground.title", { name }));
  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/overview" }, t("nav.overview")), " / ",
      h("a", { href: `#/deployments/${enc(name)}` }, name)),
    pgTitle, box);
  let doc = null, deployment = null, endpoints = [], controls = {};

  function current() { return endpoints.find((e) => e.name === select.value) || endpoints[0]; }

  function collect(ep, forSnippet = false) {
    const values = {};
    const files = {};
    for (const p of ep.params) {
      const el = controls[p.name];
      if (p.kind === "file") {
        if (el.files.length) files[p.name] = Array.from(el.files);
        continue;
      }
      if (p.kind === "boolean") {
        if (el.checked || p.required || el.dataset.touched) values[p.name] = el.checked;
        continue;
      }
      const raw = el.value;
      if (raw === "") continue;
      if (p.kind === "integer" || p.kind === "number") values[p.name] = Number(raw);
      else if (p.kind === "string") values[p.name] = raw;
      else {
        try { values[p.name] = JSON.parse(raw); } catch {
          if (forSnippet) values[p.name] = raw;
          else throw new Error(t("playground.bad_json", { name: p.name }));
        }
      }
    }
    return { values, files };
  }

  function snippets() {
    const ep = current();
    if (!ep) return;
    const base = deployment.url;
    const url = `${base}${ep.path}`;
    let values, files;
    try { ({ values, files } = collect(ep, true)); } catch { values = {}; files = {}; }
    const auth = deployment.public ? "" : ` \\\n  -H ${shellQuote(`authorization: Bearer ${state.token}`)}`;
    let c;
    if (ep.method === "GET") {
      const q = new URLSearchParams(Object.entries(values).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)])).toString();
      c = `curl ${shellQuote(q ? `${url}?${q}` : url)}${auth}`;
    } else if (ep.multipart) {
      const parts = [
        ...Object.entries(values).map(([k, v]) => `-F ${shellQuote(`${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)}`),
        ...ep.files.map((f) => `-F ${shellQuote(`${f}=@${files[f]?.[0]?.name || "file.bin"}`)}`)];
      c = `curl${ep.stream ? " -N" : ""} -X POST ${shellQuote(url)}${auth} \\\n  ${parts.join(" ")}`;
    } else {
      c = `curl${ep.stream ? " -N" : ""} -X POST ${shellQuote(url)}${auth} \\\n  -H 'content-type: application/json' -d ${shellQuote(JSON.stringify(values))}`;
    }
    curl.textContent = c;
    const args = [
      ...Object.entries(values).map(([k, v]) => `${k}=${pyLiteral(v)}`),
      ...ep.files.map((f) => `${f}=Path(${JSON.stringify(files[f]?.[0]?.name || "file.bin")})`)];
    const head = ep.files.length ? "from pathlib import Path\n\n" : "";
    const tokenArg = deployment.public ? "" : `, token=${JSON.stringify(state.token)}`;
    const call = `client.${ep.name}(${args.join(", ")})`;
    python.textContent = `${head}from fermion import Client\n\nclient = Client(${JSON.stringify(base)}${tokenArg})\n`
      + (ep.stream ? `for item in ${call}:\n    print(item)\n` : `print(${call})\n`);
  }

  function buildForm() {
    const ep = current();
    controls = {};
    const fields = ep.params.map((p) => {
      const sch = resolveRef(doc, p.schema);
      const hint = [sch.description || p.schema.description, p.required ? t("playground.required") : null].filter(Boolean).join(" · ");
      let el;
      const dflt = sch.default ?? p.schema.default;
      if (p.kind === "file") el = h("input", { type: "file", multiple: p.multiple });
      else if (p.kind === "boolean") el = h("input", { type: "checkbox", checked: Boolean(dflt) });
      else if (p.kind === "integer" || p.kind === "number") {
        el = h("input", { type: "number", step: p.kind === "integer" ? "1" : "any", placeholder: dflt !== undefined ? String(dflt) : "" });
      } else if (p.kind === "string") el = h("input", { type: "text", placeholder: dflt !== undefined ? String(dflt) : "" });
      else el = h("textarea", { rows: 4, spellcheck: "false", placeholder: dflt !== undefined ? JSON.stringify(dflt) : t("playground.json_placeholder") });
      el.name = p.name;
      if (p.required && p.kind !== "boolean") el.required = true;
      el.addEventListener("input", () => { el.dataset.touched = "1"; snippets(); });
      el.addEventListener("change", () => { el.dataset.touched = "1"; snippets(); });
      controls[p.name] = el;
      return field(p.name + (p.kind === "json" ? ` (${t("playground.json")})` : ""), el, hint || null);
    });
    const sendBox = errorBox();
    const send = h("button", { type: "submit" }, t("playground.send"));
    const form = h("form", { class: "card", onsubmit: async (event) => {
      event.preventDefault();
      showError(sendBox, null);
      send.disabled = true;
      try { await call(ep, sendBox); } finally { send.disabled = false; }
    } },
    ep.summary ? h("p", { class: "muted" }, ep.summary) : null,
    h("p", {}, h("code", {}, `${ep.method} /run/${name}${ep.path}`), ep.stream ? h("span", { class: "badge" }, t("playground.stream")) : null),
    fields.length ? fields : h("p", { class: "muted" }, t("playground.no_params")),
    h("div", { class: "row" }, send), sendBox);
    fill(formArea, form);
    fill(result);
    snippets();
  }

  async function call(ep, sendBox) {
    let values, files;
    try { ({ values, files } = collect(ep)); } catch (err) { showError(sendBox, err); return; }
    const path = `/run/${enc(name)}${ep.path}`;
    const init = { method: ep.method, headers: {} };
    if (ep.stream) init.headers.accept = "text/event-stream";
    let url = path;
    if (ep.method === "GET") {
      const q = new URLSearchParams(Object.entries(values).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)])).toString();
      if (q) url += `?${q}`;
    } else if (ep.multipart) {
      const form = new FormData();
      for (const [k, v] of Object.entries(values)) form.append(k, typeof v === "object" ? JSON.stringify(v) : String(v));
      for (const [k, list] of Object.entries(files)) for (const file of list) form.append(k, file, file.name);
      init.body = form;
    } else {
      init.body = values;
    }
    const started = performance.now();
    const status = h("p", { class: "muted" }, t("playground.waiting"));
    const out = h("pre", { class: "output", tabindex: "0" });
    fill(result, h("h2", {}, t("playground.response")), status, out);
    let answer;
    try {
      answer = await request(init.method, url, { body: init.body, headers: init.headers, raw: true });
    } catch (err) { showError(sendBox, err); fill(result); return; }
    const ctype = answer.headers.get("content-type") || "";
    const meta = () => t("playground.status", { status: answer.status, ms: num(performance.now() - started, 0), type: ctype || "-" });
    status.textContent = meta();
    if (!answer.ok) {
      const err = await errorFrom(answer);
      out.textContent = err.body ? JSON.stringify(err.body, null, 2) : err.message;
      out.classList.add("bad");
      showError(sendBox, err);
      return;
    }
    if (ctype.startsWith("text/event-stream") && answer.body) {
      const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let event = "message";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split(/\r?\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") event = "message";
          else if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:") && event === "error") {
            out.classList.add("bad");
            out.append(`${line.slice(5).trim()}\n`);
          } else if (line.startsWith("data:") && event !== "end") out.append(`${line.slice(5).trim()}\n`);
        }
        status.textContent = meta();
      }
      status.textContent = `${meta()} · ${t("playground.stream_done")}`;
    } else if (ctype.startsWith("image/")) {
      const blob = await answer.blob();
      out.replaceWith(h("img", { class: "output-image", src: URL.createObjectURL(blob), alt: t("playground.image_alt") }));
    } else if (ctype.includes("json")) {
      out.textContent = JSON.stringify(await answer.json(), null, 2);
    } else {
      out.textContent = await answer.text();
    }
  }

  (async () => {
    try {
      const [d, openapi] = await Promise.all([
        api.get(`/deployments/${enc(name)}`),
        request("GET", `/run/${enc(name)}/openapi.json`),
      ]);
      if (!mine.alive) return;
      deployment = d;
      doc = openapi;
      endpoints = endpointsOf(doc);
      if (!endpoints.length) { showError(box, new Error(t("playground.no_endpoints"))); return; }
      fill(select, endpoints.map((e) => h("option", { value: e.name }, `${e.name} (${e.method} ${e.path})`)));
      select.addEventListener("change", buildForm);
      main.append(
        h("div", { class: "card" }, field(t("playground.endpoint"), select)),
        formArea, result,
        h("section", { class: "card" }, h("div", { class: "head" }, h("h2", {}, t("playground.curl")), copyButton(() => curl.textContent)), curl),
        h("section", { class: "card" }, h("div", { class: "head" }, h("h2", {}, t("playground.python")), copyButton(() => python.textContent)), python));
      buildForm();
    } catch (err) {
      if (mine.alive) showError(box, err.status === 503 || err.status === 502 ? new Error(t("playground.not_ready")) : err);
    }
  })();
}

// ---------------------------------------------------------------- new deployment

const KINDS = [
  { value: "file", prefix: "" }, { value: "st", prefix: "st:" }, { value: "hf", prefix: "hf:" },
  { value: "sklearn", prefix: "sklearn:" }, { value: "onnx", prefix: "onnx:" }];

function newPage_(main) {
  const kind = h("select", { name: "kind" }, KINDS.map((k) => h("option", { value: k.value }, t(`new.kind.${k.value}`))));
  const source = h("input", { type: "text", name: "source", required: true, spellcheck: "false" });
  const sourceHint = h("small", { class: "hint" });
  const name = h("input", { type: "text", name: "name", required: true, pattern: "[a-z0-9]([a-z0-9-]*[a-z0-9])?", spellcheck: "false", autocomplete: "off" });
  const fixed = h("input", { type: "radio", name: "scaling", value: "fixed", checked: true });
  const auto = h("input", { type: "radio", name: "scaling", value: "auto" });
  const replicas = h("input", { type: "number", name: "replicas", min: 0, step: 1, value: "1" });
  const min = h("input", { type: "number", name: "min", min: 0, step: 1, value: "1" });
  const max = h("input", { type: "number", name: "max", min: 1, step: 1, value: "3" });
  const isPublic = h("input", { type: "checkbox", name: "public" });
  const task = h("input", { type: "text", name: "task", spellcheck: "false" });
  const trust = h("input", { type: "checkbox", name: "trust_pickle" });
  const box = errorBox();
  const fixedFields = h("div", { class: "row" }, field(t("new.replicas"), replicas));
  const autoFields = h("div", { class: "row", hidden: true }, field(t("new.min"), min), field(t("new.max"), max));
  const taskField = field(t("new.task"), task, t("new.task_hint"));
  const trustField = field(t("new.trust_pickle"), trust, t("new.trust_pickle_hint"));
  const sync = () => {
    const k = kind.value;
    source.placeholder = t(`new.placeholder.${k}`);
    sourceHint.textContent = t(`new.hint.${k}`);
    taskField.hidden = k !== "hf";
    trustField.hidden = k !== "sklearn";
    fixedFields.hidden = !fixed.checked;
    autoFields.hidden = fixed.checked;
  };
  for (const el of [kind, fixed, auto]) el.addEventListener("change", sync);
  const sourceField = field(t("new.source"), source);
  sourceHint.id = `${source.id}-hint`;
  source.setAttribute("aria-describedby", sourceHint.id);
  sourceField.append(sourceHint);
  const submit = h("button", { type: "submit" }, t("new.submit"));
  const form = h("form", { class: "card", onsubmit: async (event) => {
    event.preventDefault();
    const prefix = KINDS.find((k) => k.value === kind.value).prefix;
    let text = source.value.trim();
    if (prefix && !text.startsWith(prefix)) text = prefix + text;
    const body = { name: name.value.trim(), source: text, public: isPublic.checked };
    if (fixed.checked) {
      body.min_replicas = Number(replicas.value);
      body.max_replicas = Number(replicas.value);
    } else {
      body.min_replicas = Number(min.value);
      body.max_replicas = Number(max.value);
    }
    const options = {};
    if (kind.value === "hf" && task.value.trim()) options.task = task.value.trim();
    if (kind.value === "sklearn" && trust.checked) options.trust_pickle = true;
    if (Object.keys(options).length) body.options = options;
    submit.disabled = true;
    submit.textContent = t("new.submitting");
    try {
      const created = await api.post("/deployments", body);
      notice(t("new.created", { name: created.name }));
      location.hash = `#/deployments/${enc(created.name)}`;
    } catch (err) {
      showError(box, err);
      box.focus?.();
    } finally {
      submit.disabled = false;
      submit.textContent = t("new.submit");
    }
  } },
  h("h1", {}, t("new.title")),
  box,
  field(t("new.kind"), kind),
  sourceField,
  field(t("new.name"), name, t("new.name_hint")),
  taskField, trustField,
  h("fieldset", {}, h("legend", {}, t("new.scaling")),
    h("div", { class: "row" }, field(t("new.fixed"), fixed), field(t("new.autoscale"), auto)),
    fixedFields, autoFields),
  field(t("new.public"), isPublic, t("new.public_hint")),
  h("div", { class: "row" }, submit));
  box.tabIndex = -1;
  main.append(form);
  sync();
}

// ---------------------------------------------------------------- tokens

function tokensPage(main, _arg, mine) {
  const name = h("input", { type: "text", name: "name", required: true, autocomplete: "off", spellcheck: "false" });
  const scope = h("select", { name: "scope" }, SCOPES.map((x) => h("option", { value: x }, t(`scope.${x}`))));
  const expires = h("input", { type: "number", name: "expires_days", min: 0, step: "any" });
  const box = errorBox();
  const created = h("div", { "aria-live": "polite" });
  const body = h("tbody");
  const listBox = errorBox();
  async function load() {
    const answer = await api.get("/tokens");
    if (!mine.alive) return;
    showError(listBox, null);
    fill(body, answer.tokens.map((tok) => h("tr", { dataset: { token: tok.name } },
      h("th", { scope: "row" }, tok.name),
      h("td", {}, h("code", {}, `${tok.prefix}…`)),
      h("td", {}, tok.scopes.map((x) => tOr(`scope.${x}`, x)).join(", ")),
      h("td", {}, date(tok.created_at)),
      h("td", {}, tok.expires_at ? date(tok.expires_at) : t("tokens.never")),
      h("td", {}, tok.last_used_at ? date(tok.last_used_at) : t("tokens.never_used")),
      h("td", {}, tok.revoked_at ? h("span", { class: "badge st-failing" }, t("tokens.revoked"))
        : h("button", { type: "button", class: "danger small", "aria-label": t("tokens.revoke_named", { name: tok.name }),
          onclick: async () => {
            if (!(await confirmDialog(t("tokens.revoke_confirm", { name: tok.name }), t("tokens.revoke")))) return;
            try {
              await api.del(`/tokens/${enc(tok.id)}`);
              notice(t("tokens.revoked_notice", { name: tok.name }));
              await load();
            } catch (err) { if (err.status !== 401) notice(messageOf(err), "bad"); }
          } }, t("tokens.revoke"))))));
  }
  const form = h("form", { class: "card", onsubmit: async (event) => {
    event.preventDefault();
    const payload = { name: name.value.trim(), scopes: [scope.value] };
    if (expires.value !== "" && Number(expires.value) > 0) payload.expires_in_s = Math.round(Number(expires.value) * 86400);
    try {
      const tok = await api.post("/tokens", payload);
      showError(box, null);
      const secret = h("code", { class: "secret" }, tok.token);
      fill(created, h("div", { class: "card created" },
        h("h2", {}, t("tokens.created_title", { name: tok.name })),
        h("p", {}, t("tokens.created_once")),
        h("div", { class: "row wrap" }, secret, copyButton(() => tok.token))));
      form.reset();
      await load();
    } catch (err) { showError(box, err); }
  } },
  h("h2", {}, t("tokens.create")), box,
  h("div", { class: "row wrap" }, field(t("tokens.name"), name), field(t("tokens.scope"), scope, t("tokens.scope_hint")),
    field(t("tokens.expires_days"), expires, t("tokens.expires_hint"))),
  h("div", { class: "row" }, h("button", { type: "submit" }, t("tokens.create_submit"))));
  main.append(h("h1", {}, t("tokens.title")), form, created,
    h("section", { class: "card" }, h("h2", {}, t("tokens.list")), listBox,
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, [t("tokens.name"), t("tokens.prefix"), t("tokens.scopes"), t("tokens.created"), t("tokens.expires"),
          t("tokens.last_used"), t("overview.actions")].map((x) => h("th", { scope: "col" }, x)))),
        body))));
  load().catch((err) => showError(listBox, err));
}

// ---------------------------------------------------------------- audit

function auditPage(main, _arg, mine) {
  const body = h("tbody");
  const box = errorBox();
  main.append(h("h1", {}, t("audit.title")), box,
    h("div", { class: "scroll card" }, h("table", {},
      h("thead", {}, h("tr", {}, [t("audit.time"), t("audit.actor"), t("audit.action"), t("audit.target"), t("audit.detail")]
        .map((x) => h("th", { scope: "col" }, x)))),
      body)));
  mine.onError = (err) => showError(box, err);
  every(10000, async () => {
    const answer = await api.get("/audit?limit=200");
    if (!mine.alive) return;
    showError(box, null);
    fill(body, answer.entries.length ? answer.entries.map((e) => h("tr", {},
      h("td", {}, h("time", { datetime: e.created_at }, date(e.created_at))),
      h("td", {}, e.actor ?? t("common.none")),
      h("td", {}, h("code", { class: "nowrap" }, e.action)),
      h("td", {}, e.target ?? ""),
      h("td", {}, h("code", { class: "detail" }, typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail ?? ""))))) :
      h("tr", {}, h("td", { colspan: 5 }, t("audit.empty"))));
  });
}

// ---------------------------------------------------------------- start

async function start() {
  const select = document.getElementById("lang");
  await loadCatalog(pickLang());
  select.value = state.lang;
  translateStatic();
  select.addEventListener("change", async () => {
    localStorage.setItem(LANG_KEY, select.value);
    await loadCatalog(select.value);
    translateStatic();
    render();
  });
  document.getElementById("signout").addEventListener("click", () => signOutWith(null));
  window.addEventListener("hashchange", render);
  if (!location.hash) history.replaceState(null, "", "#/overview");
  await render();
  document.body.dataset.ready = "1";
}

start();
