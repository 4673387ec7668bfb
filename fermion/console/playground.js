// The playground: a form built from a deployment's OpenAPI schema, the call, and the answer as it comes.

import { api, copyButton, enc, errorBox, errorFrom, field, fill, h, num, request, showError, state, t } from "./core.js";
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

// The paths come from the deployment's own OpenAPI document, which its replica writes: a path is called (with the
// signed-in user's token) only when it stays under /run/<deployment>/. Plain segments only — no "..", "//", "%"
// escapes, "\\", scheme, query or fragment — and the browser's own resolution of it must agree.
const PLAIN_PATH = /^(\/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+$/;

function insideDeployment(name, path) {
  if (typeof path !== "string" || !PLAIN_PATH.test(path)) return false;
  const base = `/run/${enc(name)}/`;
  const url = new URL(`/run/${enc(name)}${path}`, location.origin);
  return url.origin === location.origin && url.pathname.startsWith(base) && url.search === "" && url.hash === "";
}

function endpointsOf(doc, name, refused) {
  const out = [];
  for (const [path, methods] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(methods || {})) {
      const meta = op && op["x-fermion"];
      if (!meta) continue;
      if (!insideDeployment(name, path)) {
        refused.push(path);
        continue;
      }
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

export function playgroundPage(main, name, mine) {
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
      const refused = [];
      endpoints = endpointsOf(doc, name, refused);
      const warnings = [...new Set(refused)].map((path) => t("playground.unsafe_path", { path: JSON.stringify(path), name }));
      if (!endpoints.length) warnings.unshift(t("playground.no_endpoints"));
      if (warnings.length) showError(box, new Error(warnings.join(" ")));
      if (!endpoints.length) return;
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
