// What every page of the console shares: state, translations, DOM helpers and the API client.
// Plain ES module, no build step, no third-party code.

export const LANGS = ["en", "zh-CN", "es"];
export const TOKEN_KEY = "fermion.token";
export const LANG_KEY = "fermion.lang";
export const SCOPES = ["invoke", "deploy", "admin"];

export const state = { token: sessionStorage.getItem(TOKEN_KEY), me: null, lang: "en", catalog: {}, flash: null };

// ---------------------------------------------------------------- i18n

export function pickLang() {
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

export async function loadCatalog(lang) {
  const answer = await fetch(new URL(`./i18n/${lang}.json`, import.meta.url));
  state.catalog = await answer.json();
  state.lang = lang;
  document.documentElement.lang = lang;
}

export function t(key, vars = {}) {
  let text = state.catalog[key];
  if (text === undefined) return key;
  for (const [name, value] of Object.entries(vars)) text = text.replaceAll(`{${name}}`, String(value));
  return text;
}

export function tOr(key, fallback) {
  return key in state.catalog ? state.catalog[key] : fallback;
}

export function num(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return t("common.none");
  const options = Math.abs(value) > 0 && Math.abs(value) < 1
    ? { maximumSignificantDigits: 3 } : { maximumFractionDigits: digits };
  return new Intl.NumberFormat(state.lang, options).format(value);
}

export function date(iso) {
  if (!iso) return t("common.none");
  return new Intl.DateTimeFormat(state.lang, { dateStyle: "medium", timeStyle: "medium" }).format(new Date(iso));
}

export function clock(iso) {
  return new Intl.DateTimeFormat(state.lang, { timeStyle: "medium" }).format(new Date(iso));
}

export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const n = (v) => new Intl.NumberFormat(state.lang).format(v);
  if (s < 60) return t("duration.s", { s: n(s) });
  if (s < 3600) return t("duration.m", { m: n(Math.floor(s / 60)), s: n(s % 60) });
  if (s < 86400) return t("duration.h", { h: n(Math.floor(s / 3600)), m: n(Math.floor((s % 3600) / 60)) });
  return t("duration.d", { d: n(Math.floor(s / 86400)), h: n(Math.floor((s % 86400) / 3600)) });
}

export function translateStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  document.title = t("app.title");
}

// ---------------------------------------------------------------- DOM helpers

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    // Through the CSSOM: the Content-Security-Policy refuses style="..." attributes.
    else if (key === "style") Object.assign(el.style, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  for (const child of children.flat()) if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

export let labelSeq = 0;
export function field(labelText, control, hint) {
  const id = control.id || `f${++labelSeq}`;
  control.id = id;
  const hintEl = hint ? h("small", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  if (control.type === "checkbox" || control.type === "radio") {
    return h("div", { class: "field check" }, control, h("label", { for: id }, labelText), hintEl);
  }
  return h("div", { class: "field" }, h("label", { for: id }, labelText), control, hintEl);
}

export function errorBox() {
  return h("div", { class: "error", role: "alert", hidden: true });
}

export function showError(box, err) {
  box.textContent = err ? messageOf(err) : "";
  box.hidden = !err;
}

export function notice(text, kind = "ok") {
  const el = document.getElementById("notice");
  el.className = `notice ${kind}`;
  el.textContent = text;
  clearTimeout(notice.timer);
  notice.at = Date.now();
  notice.timer = setTimeout(() => { el.textContent = ""; el.className = "notice"; }, 6000);
}

export function confirmDialog(text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel || t("common.confirm");
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

export function copyButton(getText) {
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

export function statusBadge(status) {
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

export function messageOf(err) {
  if (err instanceof ApiError) return err.message;
  if (err instanceof TypeError) return t("error.network");
  return String(err && err.message ? err.message : err);
}

// The platform API answers {"error": CODE, "message": TEXT}: CODE is stable (not_found, invalid, ...) and is shown
// in the page's language, TEXT (English, with the names and values involved) after it. A replica's own errors
// through the gateway carry text in "error" and no code: shown as they are.
export function errorMessage(status, body) {
  const code = body && typeof body.message === "string" && typeof body.error === "string" ? body.error : null;
  let text = body && (body.message || (typeof body.error === "string" && body.error !== "" ? body.error : null));
  if (body && Array.isArray(body.detail) && body.detail.length) {
    text = `${text || ""} ${body.detail.map((d) => (d.field ? `${d.field}: ${d.message}` : d.message || JSON.stringify(d))).join("; ")}`.trim();
  }
  const title = code ? tOr(`error.code.${code}`, null) : null;
  if (title) return text ? t("error.detail", { title, detail: text }) : title;
  if (status === 429) return t("error.busy");
  return text || t("error.http", { status });
}

export async function errorFrom(answer) {
  let body = null;
  try { body = await answer.json(); } catch { /* not JSON */ }
  return new ApiError(answer.status, errorMessage(answer.status, body), body);
}

export function eventKind(kind) {
  return tOr(`event.${kind}`, kind);
}

export function signOutWith(messageKey) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  state.flash = messageKey ? t(messageKey) : null;
  if (location.hash !== "#/signin") location.hash = "#/signin";
  else window.dispatchEvent(new HashChangeEvent("hashchange"));  // the app re-renders on every route change
}

export async function request(method, path, { body, headers = {}, raw = false, token = state.token, signal } = {}) {
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

export const api = {
  get: (path) => request("GET", `/api/v1${path}`),
  post: (path, body) => request("POST", `/api/v1${path}`, { body }),
  patch: (path, body) => request("PATCH", `/api/v1${path}`, { body }),
  del: (path) => request("DELETE", `/api/v1${path}`),
};

export function can(scope) {
  if (!state.me) return false;
  const have = Math.max(...state.me.scopes.map((x) => SCOPES.indexOf(x)));
  return have >= SCOPES.indexOf(scope);
}

export const enc = encodeURIComponent;

// ---------------------------------------------------------------- polling

// Calls fn now and then every `ms` while the page `mine` is shown; fn returning false stops it
// (a finished training job, say). Errors go to mine.onError; a 401 has already signed the user out.
export function every(mine, ms, fn) {
  const tick = async () => {
    if (!mine.alive) return;
    let again = true;
    try { again = (await fn()) !== false; } catch (err) { if (mine.alive && !(err instanceof ApiError && err.status === 401)) mine.onError?.(err); }
    if (again && mine.alive) mine.timers.push(setTimeout(tick, ms));
  };
  tick();
}
