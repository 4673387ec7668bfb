// The build pages' shared parts (names, formats, tables, the deploy form) and the Data page (datasets: upload,
// samples, schema, label balance, preview). The Train pages are in train.js, the Models pages in models.js.
// They use /api/v1/datasets, /trainings and /models; a model is deployed as the source model:NAME@V.

import { api, can, date, enc, errorBox, errorFrom, every, field, fill, h, notice, num, s, showError, signOutWith, state, t, tOr } from "./core.js";
import { batchSection } from "./batch.js";

export const SAMPLES = ["iris", "wine", "breast_cancer", "digits", "diabetes"];
export const METRICS = { classification: ["accuracy", "f1_macro", "roc_auc", "log_loss"], regression: ["rmse", "mae", "r2"] };
export const LOWER_IS_BETTER = new Set(["log_loss", "rmse", "mae"]);
export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
export const PLOT_ORDER = ["search.png", "confusion.png", "importance.png", "predictions.png"];
export const NAME_PATTERN = "[a-z]([a-z0-9-]*[a-z0-9])?";

// ---------------------------------------------------------------- shared pieces

export const metricName = (key) => (key ? tOr(`metric.${key}`, key) : t("common.none"));
export const familyName = (key) => (key ? tOr(`family.${key}`, key) : t("common.none"));
export const taskName = (key) => (key ? tOr(`task.${key}`, key) : t("common.none"));
export const kindName = (key) => tOr(`dataset.kind.${key}`, key);
export const phaseName = (key) => tOr(`phase.${key}`, key);

export function greaterIsBetter(key, model) {
  if (model?.metric?.name === key && typeof model.metric.greater_is_better === "boolean") return model.metric.greater_is_better;
  return !LOWER_IS_BETTER.has(key);
}

export function score(value) {
  return typeof value === "number" ? num(value, 4) : t("common.none");
}

export function pct(share) {
  return new Intl.NumberFormat(state.lang, { style: "percent", maximumFractionDigits: 1 }).format(share);
}

export function bytes(size) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = size, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${num(value, unit ? 1 : 0)} ${units[unit]}`;
}

// `body` is the rows, or a <tbody> that a page fills again as it refreshes.
export function dataTable(caption, headers, body, attrs = {}) {
  return h("div", { class: "scroll" }, h("table", attrs,
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    body instanceof HTMLTableSectionElement ? body : h("tbody", {}, body)));
}

export function summaryList(entries) {
  return h("dl", { class: "summary" }, entries.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function crumbs(...links) {
  return h("p", { class: "crumbs" }, links.map(([text, href], i) => [i ? " / " : null, href ? h("a", { href }, text) : text]));
}

export function emptyRow(colspan, text) {
  return h("tr", {}, h("td", { colspan, class: "muted" }, text));
}

// The newest version of each name first, then the older ones.
export function newestFirst(items) {
  return items.slice().sort((a, b) => a.name.localeCompare(b.name) || b.version - a.version);
}

// A deployment of a model version: name (default: the model's) and access; it goes to the deployment's page.
export function deployForm(ref) {
  const modelName = ref.split("@")[0];
  const name = h("input", { type: "text", name: "deployment", required: true, pattern: NAME_PATTERN, value: modelName,
    spellcheck: "false", autocomplete: "off" });
  const isPublic = h("input", { type: "checkbox", name: "public" });
  const box = errorBox();
  const submit = h("button", { type: "submit" }, t("deploy.submit"));
  const form = h("form", { class: "deploy", onsubmit: async (event) => {
    event.preventDefault();
    submit.disabled = true;
    submit.textContent = t("new.submitting");
    try {
      const created = await api.post("/deployments", { name: name.value.trim(), source: `model:${ref}`, public: isPublic.checked });
      notice(t("new.created", { name: created.name }));
      location.hash = `#/deployments/${enc(created.name)}`;
    } catch (err) {
      showError(box, err);
    } finally {
      submit.disabled = false;
      submit.textContent = t("deploy.submit");
    }
  } },
  h("h2", {}, t("deploy.title")),
  h("p", { class: "muted" }, t("deploy.intro", { source: `model:${ref}` })),
  box,
  h("div", { class: "row wrap" }, field(t("deploy.name"), name, t("new.name_hint")), field(t("new.public"), isPublic)),
  h("div", { class: "row" }, submit));
  return form;
}

// ---------------------------------------------------------------- Data

export function uploadFile(file, name, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();  // fetch() cannot report upload progress
    xhr.open("POST", "/api/v1/datasets");
    if (state.token) xhr.setRequestHeader("authorization", `Bearer ${state.token}`);
    xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded, event.lengthComputable ? event.total : file.size));
    xhr.upload.addEventListener("load", () => onProgress(file.size, file.size, true));
    xhr.addEventListener("error", () => reject(new TypeError("network")));
    xhr.addEventListener("load", async () => {
      const answer = new Response(xhr.responseText, { status: xhr.status,
        headers: { "content-type": xhr.getResponseHeader("content-type") || "text/plain" } });
      if (xhr.status === 401) signOutWith("signin.expired");
      if (answer.ok) resolve(await answer.json());
      else reject(await errorFrom(answer));
    });
    const form = new FormData();
    form.append("file", file, file.name);
    if (name) form.append("name", name);
    xhr.send(form);
  });
}
export function dataPage(main, ref, mine) {
  if (ref) { datasetPage(main, ref, mine); return; }
  const box = errorBox();
  const body = h("tbody");
  const result = h("div", { class: "added", "aria-live": "polite" });

  function added(described, what) {
    fill(result, h("p", { class: "ok-line" },
      t(described.created ? "data.added" : "data.exists", { what, ref: described.ref, rows: num(described.rows, 0) }), " ",
      h("a", { href: `#/data/${enc(described.ref)}` }, t("data.open", { ref: described.ref }))));
    load();
  }

  const forms = [];
  if (can("deploy")) {
    const file = h("input", { type: "file", name: "file", required: true, accept: ".csv,.jsonl,.ndjson,.parquet,.zip" });
    const name = h("input", { type: "text", name: "name", pattern: NAME_PATTERN, spellcheck: "false", autocomplete: "off" });
    const bar = h("progress", { max: 100, value: 0, "aria-label": t("data.upload") });
    const barText = h("span", { class: "muted" });
    const status = h("div", { class: "upload-status", hidden: true, dataset: { state: "idle" } }, bar, barText);
    const uploadBox = errorBox();
    const submit = h("button", { type: "submit" }, t("data.upload"));
    forms.push(h("form", { class: "card", onsubmit: async (event) => {
      event.preventDefault();
      const chosen = file.files[0];
      if (!chosen) return;
      showError(uploadBox, null);
      fill(result);
      submit.disabled = true;
      status.hidden = false;
      status.dataset.state = "uploading";
      bar.value = 0;
      barText.textContent = t("data.uploading", { percent: pct(0), sent: bytes(0), total: bytes(chosen.size) });
      try {
        const described = await uploadFile(chosen, name.value.trim(), (sent, total, done) => {
          if (done) {  // every byte is there; the platform now reads and checks the file
            status.dataset.state = "processing";
            bar.value = 100;
            barText.textContent = t("data.processing");
            return;
          }
          bar.value = total ? (100 * sent) / total : 0;
          barText.textContent = t("data.uploading", { percent: pct(total ? sent / total : 0), sent: bytes(sent), total: bytes(total) });
        });
        status.dataset.state = "done";
        bar.value = 100;
        barText.textContent = t("data.uploaded", { size: bytes(chosen.size) });
        if (mine.alive) added(described, chosen.name);
      } catch (err) {
        status.dataset.state = "failed";
        barText.textContent = t("data.upload_failed");
        showError(uploadBox, err);
      } finally {
        submit.disabled = false;
      }
    } },
    h("h2", {}, t("data.upload_title")),
    h("p", { class: "muted" }, t("data.upload_intro")),
    uploadBox,
    h("div", { class: "row wrap" }, field(t("data.file"), file), field(t("data.name"), name, t("data.name_hint"))),
    h("div", { class: "row" }, submit), status));

    const sample = h("select", { name: "sample" }, SAMPLES.map((x) => h("option", { value: `sample:${x}` }, tOr(`sample.${x}`, x))));
    const sampleBox = errorBox();
    const addSample = h("button", { type: "submit", class: "secondary" }, t("data.add_sample"));
    forms.push(h("form", { class: "card", onsubmit: async (event) => {
      event.preventDefault();
      showError(sampleBox, null);
      fill(result);
      addSample.disabled = true;
      try {
        const described = await api.post("/datasets/samples", { source: sample.value });
        if (mine.alive) added(described, sample.value);
      } catch (err) {
        showError(sampleBox, err);
      } finally {
        addSample.disabled = false;
      }
    } },
    h("h2", {}, t("data.sample_title")), sampleBox,
    h("div", { class: "row" }, field(t("data.sample"), sample), addSample)));
  }

  main.append(
    h("h1", {}, t("data.title")),
    h("div", { class: "add-data" }, forms),
    result,
    box,
    h("section", { class: "card" }, h("h2", {}, t("data.list")),
      dataTable(t("data.list"), [t("data.dataset"), t("data.kind"), t("data.rows"), t("data.columns"), t("data.label_column"),
        t("data.classes"), t("data.source"), t("data.added_at"), t("overview.actions")], body, { class: "datasets" })),
    batchSection(mine));

  async function load() {
    const answer = await api.get("/datasets");
    if (!mine.alive) return;
    showError(box, null);
    const rows = newestFirst(answer.datasets).map((d) => h("tr", { dataset: { dataset: d.ref } },
      h("th", { scope: "row" }, h("a", { href: `#/data/${enc(d.ref)}` }, d.ref)),
      h("td", {}, kindName(d.kind), d.format ? h("small", { class: "muted" }, ` ${d.format}`) : null),
      h("td", { class: "num" }, num(d.rows, 0)),
      h("td", { class: "num" }, num(d.columns.length, 0)),
      h("td", {}, d.label_column ? h("code", {}, d.label_column) : t("common.none")),
      h("td", { class: "num" }, d.labels ? num(Object.keys(d.labels).length, 0) : t("common.none")),
      h("td", {}, h("code", {}, d.source || "")),
      h("td", {}, date(d.created_at)),
      h("td", {}, can("deploy") ? h("a", { href: `#/train/${enc(d.ref)}` }, t("data.train")) : null)));
    fill(body, rows.length ? rows : emptyRow(9, t("data.empty")));
  }
  load().catch((err) => showError(box, err));
}

function datasetPage(main, ref, mine) {
  const box = errorBox();
  const title = h("h1", {}, ref);
  const head = h("div", { class: "head" }, title);
  const content = h("div");
  main.append(crumbs([t("nav.data"), "#/data"], [ref]), head, box, content);

  (async () => {
    const [d, all] = await Promise.all([api.get(`/datasets/${enc(ref)}`), api.get("/datasets")]);
    if (!mine.alive) return;
    fill(title, d.ref);
    if (can("deploy")) head.append(h("a", { class: "button", href: `#/train/${enc(d.ref)}` }, t("data.train_on")));
    const versions = all.datasets.filter((x) => x.name === d.name).sort((a, b) => b.version - a.version);
    const sections = [
      h("section", { class: "card" }, summaryList([
        [t("data.kind"), `${kindName(d.kind)}${d.format ? ` (${d.format})` : ""}`],
        [t("data.rows"), num(d.rows, 0)],
        [t("data.columns"), num(d.columns.length, 0)],
        [t("data.missing"), num(d.missing ?? 0, 0)],
        [t("data.label_column"), d.label_column ? h("code", {}, d.label_column) : t("common.none")],
        [t("data.source"), h("code", {}, d.source || "")],
        [t("data.added_at"), date(d.created_at)],
        [t("data.hash"), h("code", { title: d.hash }, (d.hash || "").slice(0, 12))],
        versions.length > 1 ? [t("data.versions"), h("span", { class: "versions" }, versions.map((v, i) => [i ? ", " : null,
          v.ref === d.ref ? h("strong", {}, v.ref) : h("a", { href: `#/data/${enc(v.ref)}` }, v.ref)]))] : null,
      ])),
    ];
    if (d.columns.length) {
      sections.push(h("section", { class: "card" }, h("h2", {}, t("data.schema")),
        dataTable(t("data.schema"), [t("data.column"), t("data.dtype"), t("data.missing")], d.columns.map((c) => h("tr", {},
          h("th", { scope: "row" }, h("code", {}, c.name), c.name === d.label_column ? h("span", { class: "badge" }, t("data.label")) : null),
          h("td", {}, h("code", {}, c.dtype)),
          h("td", { class: "num" }, num(c.missing ?? 0, 0), c.missing && d.rows ? h("small", { class: "muted" }, ` (${pct(c.missing / d.rows)})`) : null))),
        { class: "schema" })));
    }
    if (d.labels) {
      const entries = Object.entries(d.labels).sort((a, b) => b[1].count - a[1].count);
      const top = Math.max(...entries.map(([, v]) => v.share), 0) || 1;
      sections.push(h("section", { class: "card" }, h("h2", {}, t("data.balance")),
        dataTable(t("data.balance"), [t("data.label"), t("data.rows"), t("data.share")], entries.map(([label, v]) => h("tr", { dataset: { label } },
          h("th", { scope: "row" }, label),
          h("td", { class: "num" }, num(v.count, 0)),
          h("td", { class: "share" }, h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: { width: `${(100 * v.share) / top}%` } })),
            h("span", { class: "num" }, pct(v.share))))), { class: "balance" })));
    }
    const keys = d.preview.length ? Object.keys(d.preview[0]) : [];
    sections.push(h("section", { class: "card" }, h("h2", {}, t("data.preview")),
      keys.length ? dataTable(t("data.preview"), keys, d.preview.map((row) => h("tr", {}, keys.map((k) => h("td", {},
        row[k] === null || row[k] === undefined ? t("common.none") : typeof row[k] === "number" ? num(row[k], 4) : String(row[k]))))),
      { class: "preview" }) : h("p", { class: "muted" }, t("data.no_preview"))));
    fill(content, sections);
  })().catch((err) => { if (mine.alive && err.status !== 401) showError(box, err); });
}

// ---------------------------------------------------------------- Train
