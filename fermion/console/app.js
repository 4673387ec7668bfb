// The Fermion web console: plain ES modules, no build step, no third-party code.
// It talks to the platform's REST API (/api/v1) and the gateway (/run/<name>) only.
// This module routes between the pages; core.js holds what they share, deployment.js a deployment's page,
// playground.js the playground, build.js, train.js and models.js the Data, Train and Models pages (batch.js: the
// Data page's batch predictions).

import { LANG_KEY, SCOPES, TOKEN_KEY, api, can, clock, confirmDialog, copyButton, date, enc, errorBox, every, field, fill, h, loadCatalog, messageOf, notice, num, pickLang, request, s, showError, signOutWith, state, statusBadge, t, tOr, translateStatic } from "./core.js";
import { deploymentPage } from "./deployment.js";
import { playgroundPage } from "./playground.js";
import { dataPage } from "./build.js";
import { modelsPage } from "./models.js";
import { trainPage, trainingPage } from "./train.js";

let page = { timers: [], alive: false };
// ---------------------------------------------------------------- pages and routing

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
    new: newPage_, tokens: tokensPage, audit: auditPage, data: dataPage, train: trainPage, training: trainingPage, models: modelsPage };
  if (name === "training" && !arg) name = "train";
  if (!pages[name] || ((name === "deployments" || name === "playground") && !arg)) name = "overview";
  if ((name === "tokens" || name === "audit") && !can("admin")) name = "overview";
  // An invoke token calls deployments and reads their description; the rest needs deploy (docs/security.md).
  if (["new", "data", "train", "training", "models"].includes(name) && !can("deploy")) name = "overview";
  const navName = name === "training" ? "train" : name;  // a job's live view belongs to the Train page
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.route === navName) link.setAttribute("aria-current", "page");
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
  every(mine, 3000, async () => {
    const [list, metrics] = await Promise.all([api.get("/deployments"), can("deploy") ? api.get("/metrics?minutes=5").catch(() => ({ deployments: {} })) : { deployments: {} }]);
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
  const cpus = h("input", { type: "number", name: "cpus", min: 0.01, step: "any", inputmode: "decimal" });
  const gpus = h("input", { type: "number", name: "gpus", min: 0, step: "any", inputmode: "decimal" });
  const memory = h("input", { type: "text", name: "memory", placeholder: "2GiB", spellcheck: "false" });
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
    const resources = {};
    if (cpus.value !== "") resources.cpus = Number(cpus.value);
    if (gpus.value !== "") resources.gpus = Number(gpus.value);
    if (memory.value.trim()) resources.memory = memory.value.trim();
    if (Object.keys(resources).length) options.resources = resources;
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
  h("fieldset", {}, h("legend", {}, t("new.resources")),
    h("small", { class: "hint" }, t("new.resources_hint")),
    h("div", { class: "row" }, field(t("new.cpus"), cpus), field(t("new.gpus"), gpus), field(t("new.memory"), memory))),
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
  every(mine, 10000, async () => {
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
