// The build pages: Data (datasets: upload, samples, schema, label balance, preview), Train (a training job
// started from a form and followed live) and Models (the registry: metrics, plots, versions, compare, deploy).
// They use /api/v1/datasets, /trainings and /models; a model is deployed as the source model:NAME@V.

import { api, can, confirmDialog, date, duration, enc, errorBox, errorFrom, every, field, fill, h, messageOf, notice, num, request, s, showError, signOutWith, state, statusBadge, t, tOr } from "./core.js";

const SAMPLES = ["iris", "wine", "breast_cancer", "digits", "diabetes"];
const METRICS = { classification: ["accuracy", "f1_macro", "roc_auc", "log_loss"], regression: ["rmse", "mae", "r2"] };
const LOWER_IS_BETTER = new Set(["log_loss", "rmse", "mae"]);
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const PLOT_ORDER = ["search.png", "confusion.png", "importance.png", "predictions.png"];
const NAME_PATTERN = "[a-z]([a-z0-9-]*[a-z0-9])?";

// ---------------------------------------------------------------- shared pieces

const metricName = (key) => (key ? tOr(`metric.${key}`, key) : t("common.none"));
const familyName = (key) => (key ? tOr(`family.${key}`, key) : t("common.none"));
const taskName = (key) => (key ? tOr(`task.${key}`, key) : t("common.none"));
const kindName = (key) => tOr(`dataset.kind.${key}`, key);
const phaseName = (key) => tOr(`phase.${key}`, key);

function greaterIsBetter(key, model) {
  if (model?.metric?.name === key && typeof model.metric.greater_is_better === "boolean") return model.metric.greater_is_better;
  return !LOWER_IS_BETTER.has(key);
}

function score(value) {
  return typeof value === "number" ? num(value, 4) : t("common.none");
}

function pct(share) {
  return new Intl.NumberFormat(state.lang, { style: "percent", maximumFractionDigits: 1 }).format(share);
}

function bytes(size) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = size, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${num(value, unit ? 1 : 0)} ${units[unit]}`;
}

// `body` is the rows, or a <tbody> that a page fills again as it refreshes.
function dataTable(caption, headers, body, attrs = {}) {
  return h("div", { class: "scroll" }, h("table", attrs,
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    body instanceof HTMLTableSectionElement ? body : h("tbody", {}, body)));
}

function summaryList(entries) {
  return h("dl", { class: "summary" }, entries.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function crumbs(...links) {
  return h("p", { class: "crumbs" }, links.map(([text, href], i) => [i ? " / " : null, href ? h("a", { href }, text) : text]));
}

function emptyRow(colspan, text) {
  return h("tr", {}, h("td", { colspan, class: "muted" }, text));
}

// The newest version of each name first, then the older ones.
function newestFirst(items) {
  return items.slice().sort((a, b) => a.name.localeCompare(b.name) || b.version - a.version);
}

// A deployment of a model version: name (default: the model's) and access; it goes to the deployment's page.
function deployForm(ref) {
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

function uploadFile(file, name, onProgress) {
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
        t("data.classes"), t("data.source"), t("data.added_at"), t("overview.actions")], body, { class: "datasets" })));

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
          h("td", { class: "share" }, h("span", { class: "bar", "aria-hidden": "true" }, h("span", { style: `width:${(100 * v.share) / top}%` })),
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

export function trainPage(main, ref, mine) {
  const box = errorBox();
  const jobsBody = h("tbody");
  main.append(h("h1", {}, t("train.title")));
  if (can("deploy")) main.append(trainForm(ref, mine));
  main.append(h("section", { class: "card" }, h("h2", {}, t("train.recent")), box,
    dataTable(t("train.recent"), [t("train.job"), t("train.dataset"), t("train.target"), t("train.status"), t("train.trials"),
      t("train.best"), t("train.model"), t("train.started")], jobsBody, { class: "jobs" })));
  mine.onError = (err) => showError(box, err);
  every(mine, 3000, async () => {
    const answer = await api.get("/trainings");
    if (!mine.alive) return;
    showError(box, null);
    fill(jobsBody, answer.trainings.length ? answer.trainings.map((job) => h("tr", { dataset: { job: job.id } },
      h("th", { scope: "row" }, h("a", { href: `#/training/${enc(job.id)}` }, h("code", {}, job.id))),
      h("td", {}, job.dataset),
      h("td", {}, job.target ? h("code", {}, job.target) : t("training.default_target")),
      h("td", {}, statusBadge(job.status), job.status === "running" && job.phase ? h("small", { class: "muted" }, ` ${phaseName(job.phase)}`) : null),
      h("td", { class: "num" }, num(job.trial_count, 0)),
      h("td", { class: "num" }, job.best_score == null ? t("common.none") : `${score(job.best_score)} ${metricName(job.metric_used)}`),
      h("td", {}, job.model ? h("a", { href: `#/models/${enc(job.model)}` }, job.model) : t("common.none")),
      h("td", {}, date(job.started_at ?? job.created_at)))) : emptyRow(8, t("train.no_jobs")));
  });
}

function trainForm(ref, mine) {
  const dataset = h("select", { name: "dataset", required: true });
  const target = h("select", { name: "target" });
  const budget = h("input", { type: "number", name: "budget", min: 2, max: 86400, step: "any", value: "60", required: true });
  const metric = h("select", { name: "metric" }, h("option", { value: "" }, t("train.automatic")),
    Object.entries(METRICS).map(([task, keys]) => h("optgroup", { label: taskName(task) }, keys.map((k) => h("option", { value: k }, metricName(k))))));
  const task = h("select", { name: "task" }, h("option", { value: "" }, t("train.automatic")),
    ["classification", "regression"].map((k) => h("option", { value: k }, taskName(k))));
  const name = h("input", { type: "text", name: "model_name", spellcheck: "false", autocomplete: "off" });
  const maxTrials = h("input", { type: "number", name: "max_trials", min: 1, step: 1 });
  const box = errorBox();
  const targetField = field(t("train.target_column"), target, t("train.target_hint"));
  const submit = h("button", { type: "submit" }, t("train.start"));
  let datasets = [];

  const chosen = () => datasets.find((d) => d.ref === dataset.value);
  function syncTarget() {
    const d = chosen();
    targetField.hidden = !d || d.kind !== "table";
    if (!d) return;
    const preferred = d.label_column && d.columns.includes(d.label_column) ? d.label_column : d.columns[d.columns.length - 1];
    fill(target, d.columns.map((c) => h("option", { value: c, selected: c === preferred }, c)));
    name.placeholder = d.name;
  }
  dataset.addEventListener("change", syncTarget);

  const form = h("form", { class: "card", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    const d = chosen();
    const seconds = Number(budget.value);
    const trials = maxTrials.value === "" ? null : Number(maxTrials.value);
    let problem = null;
    if (!d) problem = t("train.pick_dataset");
    else if (budget.value === "" || !Number.isFinite(seconds) || seconds < 2 || seconds > 86400) problem = t("train.bad_budget");
    else if (trials !== null && !(Number.isInteger(trials) && trials >= 1)) problem = t("train.bad_max_trials");
    else if (name.value.trim() && !new RegExp(`^${NAME_PATTERN}$`).test(name.value.trim())) problem = t("train.bad_name");
    if (problem) { showError(box, new Error(problem)); box.focus(); return; }
    const body = { dataset: d.ref, budget_s: seconds };
    if (d.kind === "table" && target.value) body.target = target.value;
    if (metric.value) body.metric = metric.value;
    if (task.value) body.task = task.value;
    if (name.value.trim()) body.name = name.value.trim();
    if (trials !== null) body.max_trials = trials;
    submit.disabled = true;
    try {
      const job = await api.post("/trainings", body);
      notice(t("train.started_notice", { dataset: job.dataset }));
      location.hash = `#/training/${enc(job.id)}`;
    } catch (err) {
      showError(box, err);
      box.focus();
    } finally {
      submit.disabled = false;
    }
  } },
  h("h2", {}, t("train.new")), box,
  h("div", { class: "row wrap" }, field(t("train.dataset"), dataset), targetField,
    field(t("train.budget"), budget, t("train.budget_hint"))),
  h("details", {}, h("summary", {}, t("train.more")),
    h("div", { class: "row wrap" }, field(t("train.metric"), metric), field(t("train.task"), task),
      field(t("train.model_name"), name, t("train.model_name_hint")), field(t("train.max_trials"), maxTrials, t("train.max_trials_hint")))),
  h("div", { class: "row" }, submit));
  box.tabIndex = -1;

  api.get("/datasets").then((answer) => {
    if (!mine.alive) return;
    datasets = newestFirst(answer.datasets);
    if (!datasets.length) {
      form.replaceChildren(h("h2", {}, t("train.new")), h("p", {}, t("train.no_datasets"), " ", h("a", { href: "#/data" }, t("nav.data"))));
      return;
    }
    const wanted = ref && (datasets.find((d) => d.ref === ref) || datasets.find((d) => d.name === ref));
    fill(dataset, datasets.map((d) => h("option", { value: d.ref, selected: d === wanted },
      t("train.dataset_option", { ref: d.ref, rows: num(d.rows, 0), kind: kindName(d.kind) }))));
    syncTarget();
  }).catch((err) => showError(box, err));
  return form;
}

// The scores of the trials as dots, with the best so far as a line; inline SVG.
function trialChart(trials, metricKey) {
  const lower = LOWER_IS_BETTER.has(metricKey);
  const scored = trials.filter((x) => typeof x.score === "number" && Number.isFinite(x.score));
  const figure = h("figure", { class: "chart-box trial-chart", dataset: { points: String(scored.length) } },
    h("figcaption", {}, h("strong", {}, t("training.chart", { metric: metricName(metricKey) })), " ",
      h("span", { class: "muted" }, t(lower ? "training.lower_better" : "training.higher_better"))));
  if (!scored.length) {
    figure.append(h("p", { class: "muted" }, t("training.no_trials")));
    return figure;
  }
  const W = 900, H = 200, L = 60, R = 12, T = 12, B = 26;
  const values = scored.map((x) => x.score);
  let lo = Math.min(...values), hi = Math.max(...values);
  const pad = hi > lo ? (hi - lo) * 0.1 : Math.abs(hi) * 0.05 || 0.5;
  lo -= pad;
  hi += pad;
  const last = Math.max(...trials.map((x) => x.number || 0), 1);
  const x = (n) => L + (last === 1 ? 0.5 : (n - 1) / (last - 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "trials",
    "aria-label": t("training.chart", { metric: metricName(metricKey) }) });
  for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", class: "axis" }, num(v, 4)));
  }
  svg.append(s("text", { x: L, y: H - 6, class: "axis" }, t("training.trial_n", { n: 1 })));
  if (last > 1) svg.append(s("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" }, t("training.trial_n", { n: last })));
  let best = null;
  let d = "";
  for (const trial of scored) {  // a step line: it moves only when a trial beats the best so far
    const before = best;
    if (best === null || (lower ? trial.score < best : trial.score > best)) best = trial.score;
    const at = x(trial.number).toFixed(1);
    d += before === null ? `M${at},${y(best).toFixed(1)} ` : `L${at},${y(before).toFixed(1)} L${at},${y(best).toFixed(1)} `;
  }
  svg.append(s("path", { d, class: "best-line", fill: "none", "vector-effect": "non-scaling-stroke" }));
  for (const trial of scored) {
    svg.append(s("circle", { cx: x(trial.number).toFixed(1), cy: y(trial.score).toFixed(1), r: 4, class: "dot" },
      s("title", {}, `${t("training.trial_n", { n: trial.number })} · ${familyName(trial.family)} · ${score(trial.score)}`)));
  }
  figure.append(svg, h("ul", { class: "legend" },
    h("li", {}, h("span", { class: "swatch dot-swatch" }), t("training.legend_trial")),
    h("li", {}, h("span", { class: "swatch best-swatch" }), t("training.legend_best"))));
  return figure;
}

export function trainingPage(main, id, mine) {
  const box = errorBox();
  const failure = h("div", { class: "error", role: "alert", hidden: true });
  const title = h("h1", {}, t("training.title", { id }));
  const cancel = h("button", { type: "button", class: "danger", hidden: true, onclick: async () => {
    if (!(await confirmDialog(t("training.cancel_confirm"), t("training.cancel")))) return;
    try {
      await api.del(`/trainings/${enc(id)}`);
      notice(t("training.cancelled_notice"));
    } catch (err) { notice(messageOf(err), "bad"); }
  } }, t("training.cancel"));
  const summary = h("div");
  const phase = h("p", { class: "phase" });
  const bar = h("progress", { max: 1, value: 0, class: "budget", "aria-label": t("train.budget_short") });
  const barText = h("span", { class: "muted" });
  const stats = h("dl", { class: "stats" });
  const chart = h("div");
  const live = h("section", { class: "card live", "aria-live": "polite" }, phase, h("div", { class: "progress-row" }, bar, barText), stats, chart);
  const result = h("div");
  main.append(crumbs([t("nav.train"), "#/train"], [id]), h("div", { class: "head" }, title, cancel), box, failure, summary, live, result);
  mine.onError = (err) => showError(box, err);

  let shown = 0, lastElapsed = null, seenAt = 0, finished = false;
  every(mine, 1000, async () => {
    let job;
    try {
      job = await api.get(`/trainings/${enc(id)}`);
    } catch (err) {
      if (err.status !== 404) throw err;
      showError(box, err);  // no such job (any more): nothing to follow
      return false;
    }
    if (!mine.alive) return false;
    showError(box, null);
    const metricKey = job.metric_used || job.metric;
    fill(title, t("training.title", { id: job.id }), " ", statusBadge(job.status));
    cancel.hidden = !can("deploy") || !(job.status === "queued" || job.status === "running");
    fill(summary, h("section", { class: "card" }, summaryList([
      [t("train.dataset"), h("a", { href: `#/data/${enc(job.dataset)}` }, job.dataset)],
      [t("train.target"), job.target ? h("code", {}, job.target) : t("training.default_target")],
      [t("train.budget_short"), duration(job.budget_s)],
      [t("train.metric"), metricKey ? metricName(metricKey) : t("train.automatic")],
      [t("train.task"), job.task_kind ? taskName(job.task_kind) : t("train.automatic")],
      job.name ? [t("train.model_name"), job.name] : null,
      job.max_trials ? [t("train.max_trials"), num(job.max_trials, 0)] : null,
      [t("train.started"), date(job.started_at ?? job.created_at)],
    ])));

    // The child reports elapsed time between steps; in between, the bar moves on the browser's clock.
    const now = performance.now();
    if (job.elapsed !== lastElapsed) { lastElapsed = job.elapsed; seenAt = now; }
    if (job.status === "running") shown = Math.min(job.budget_s, Math.max(shown, job.elapsed + (now - seenAt) / 1000));
    else shown = job.status === "queued" ? 0 : job.elapsed;
    bar.max = job.budget_s;
    bar.value = Math.min(shown, job.budget_s);
    barText.textContent = t("training.elapsed", { elapsed: duration(shown), budget: duration(job.budget_s) });
    live.dataset.status = job.status;
    live.dataset.trials = String(job.trials.length);
    phase.textContent = job.status === "queued" ? t("phase.queued")
      : job.status === "running" ? (job.phase ? phaseName(job.phase) : t("phase.starting"))
        : tOr(`training.${job.status}`, job.status);
    fill(stats,
      h("dt", {}, t("train.trials")), h("dd", { class: "trials" }, num(job.trials.length, 0)),
      h("dt", {}, t("training.best_so_far")), h("dd", { class: "best" }, job.best_score == null ? t("common.none")
        : t("training.best_value", { score: score(job.best_score), metric: metricName(metricKey), family: familyName(job.best_family) })));
    fill(chart, trialChart(job.trials, metricKey));

    failure.hidden = job.status !== "failed" && job.status !== "cancelled";
    failure.textContent = job.error || "";
    if (job.status === "succeeded" && job.model && !finished) {
      fill(result, h("section", { class: "card done", dataset: { model: job.model } },
        h("h2", {}, t("training.model_ready", { ref: job.model })),
        h("p", {}, h("a", { class: "button", href: `#/models/${enc(job.model)}` }, t("training.open_model"))),
        can("deploy") ? deployForm(job.model) : null));
    }
    finished = FINISHED.has(job.status);
    return !finished;
  });
}

// ---------------------------------------------------------------- Models

export function modelsPage(main, ref, mine) {
  if (ref) { modelPage(main, ref, mine); return; }
  const box = errorBox();
  const body = h("tbody");
  main.append(h("div", { class: "head" }, h("h1", {}, t("models.title")),
    can("deploy") ? h("a", { class: "button", href: "#/train" }, t("models.train")) : null), box,
  h("section", { class: "card" }, dataTable(t("models.title"), [t("models.model"), t("train.dataset"), t("train.target"), t("train.task"),
    t("models.family"), t("models.test_metric"), t("models.trained")], body, { class: "models" })));
  api.get("/models").then((answer) => {
    if (!mine.alive) return;
    fill(body, answer.models.length ? newestFirst(answer.models).map((m) => {
      const key = m.metric?.name;
      return h("tr", { dataset: { model: m.ref } },
        h("th", { scope: "row" }, h("a", { href: `#/models/${enc(m.ref)}` }, m.ref)),
        h("td", {}, m.dataset ? h("a", { href: `#/data/${enc(m.dataset)}` }, m.dataset) : t("common.none")),
        h("td", {}, m.target ? h("code", {}, m.target) : t("common.none")),
        h("td", {}, taskName(m.task)),
        h("td", {}, familyName(m.family)),
        h("td", { class: "num" }, key ? `${metricName(key)}: ${score(m.metrics?.[key])}` : t("common.none")),
        h("td", {}, date(m.created_at)));
    }) : emptyRow(7, t("models.empty")));
  }).catch((err) => showError(box, err));
}

async function openReport(ref) {
  const tab = window.open("", "_blank");  // opened inside the click, so that popup blockers let it through
  try {
    const answer = await request("GET", `/api/v1/models/${enc(ref)}/report`, { raw: true });
    if (!answer.ok) throw await errorFrom(answer);
    // The report needs the token, which a plain link cannot send: it opens from a blob instead.
    const url = URL.createObjectURL(new Blob([await answer.text()], { type: "text/html" }));
    if (tab) tab.location.href = url;
    else location.href = url;
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    tab?.close();
    notice(messageOf(err), "bad");
  }
}

function plotFigure(ref, file, mine) {
  const stem = file.replace(/\.png$/, "");
  const caption = tOr(`plot.${stem}`, stem);
  const img = h("img", { class: "plot", alt: caption });
  const figure = h("figure", { class: "plot-box", dataset: { plot: stem } }, img, h("figcaption", {}, caption));
  request("GET", `/api/v1/models/${enc(ref)}/plots/${enc(file)}`, { raw: true }).then(async (answer) => {
    if (!answer.ok) throw await errorFrom(answer);
    const blob = await answer.blob();
    if (!mine.alive) return;
    // <img> cannot send the token: the plot is fetched with it and shown from a blob.
    const url = URL.createObjectURL(blob);
    img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
    img.src = url;
  }).catch((err) => { if (mine.alive) figure.append(h("p", { class: "error" }, messageOf(err))); });
  return figure;
}

function metricsTable(m) {
  const keys = Object.keys(m.metrics || {});
  return dataTable(t("models.metrics"), [t("models.metric"), t("models.test_value")], keys.map((k) => h("tr", { dataset: { metric: k } },
    h("th", { scope: "row" }, metricName(k), k === m.metric?.name ? h("span", { class: "badge" }, t("models.optimized")) : null,
      h("small", { class: "muted" }, ` ${t(greaterIsBetter(k, m) ? "training.higher_better" : "training.lower_better")}`)),
    h("td", { class: "num" }, score(m.metrics[k])))), { class: "metrics" });
}

// Two versions side by side; per metric the better value is marked (higher or lower, as the metric says).
function compareTable(a, b) {
  const keys = [...new Set([...Object.keys(a.metrics || {}), ...Object.keys(b.metrics || {})])];
  const cell = (value, better) => h("td", { class: better ? "num better" : "num", dataset: better ? { better: "1" } : {} },
    score(value), better ? h("span", { class: "mark" }, " ✓", h("span", { class: "sr-only" }, t("compare.better"))) : null);
  const rows = keys.map((k) => {
    const x = a.metrics?.[k], y = b.metrics?.[k];
    const up = greaterIsBetter(k, a);
    const both = typeof x === "number" && typeof y === "number" && x !== y;
    const aWins = both && (up ? x > y : x < y);
    return h("tr", { dataset: { metric: k } }, h("th", { scope: "row" }, metricName(k)), cell(x, aWins), cell(y, both && !aWins));
  });
  const plain = (label, x, y) => h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, x), h("td", {}, y));
  rows.push(
    plain(t("models.family"), familyName(a.family), familyName(b.family)),
    plain(t("models.cv_score"), score(a.cv_score), score(b.cv_score)),
    plain(t("train.dataset"), a.dataset || t("common.none"), b.dataset || t("common.none")),
    plain(t("models.training_time"), duration(a.training_seconds ?? 0), duration(b.training_seconds ?? 0)),
    plain(t("train.trials"), num(Array.isArray(a.trials) ? a.trials.length : a.trials ?? 0, 0), num(Array.isArray(b.trials) ? b.trials.length : b.trials ?? 0, 0)));
  return dataTable(t("compare.title", { a: a.ref, b: b.ref }), [t("models.metric"), a.ref, b.ref], rows, { class: "compare" });
}

function modelPage(main, ref, mine) {
  const box = errorBox();
  const title = h("h1", {}, ref);
  const report = h("button", { type: "button", class: "secondary", onclick: () => openReport(title.dataset.ref || ref) }, t("models.report"));
  const content = h("div");
  main.append(crumbs([t("nav.models"), "#/models"], [ref]), h("div", { class: "head" }, title, report), box, content);

  (async () => {
    const [m, all] = await Promise.all([api.get(`/models/${enc(ref)}`), api.get("/models")]);
    if (!mine.alive) return;
    title.textContent = m.ref;
    title.dataset.ref = m.ref;
    const versions = all.models.filter((x) => x.name === m.name).sort((a, b) => b.version - a.version);
    const trials = Array.isArray(m.trials) ? m.trials : [];
    const key = m.metric?.name;
    const sections = [
      h("section", { class: "card" }, summaryList([
        [t("train.dataset"), m.dataset ? h("a", { href: `#/data/${enc(m.dataset)}` }, m.dataset) : t("common.none")],
        [t("train.target"), m.target ? h("code", {}, m.target) : t("common.none")],
        [t("train.task"), taskName(m.task)],
        [t("models.family"), familyName(m.family)],
        [t("models.selected_by"), key ? t("models.selected_value", { metric: metricName(key), score: score(m.cv_score) }) : t("common.none")],
        [t("models.rows"), m.rows ? t("models.rows_value", { train: num(m.rows.train, 0), test: num(m.rows.test, 0) }) : t("common.none")],
        [t("models.training_time"), duration(m.training_seconds ?? 0)],
        [t("train.trials"), num(trials.length, 0)],
        [t("models.trained"), date(m.created_at)],
        [t("deployment.source"), h("code", {}, m.source)],
      ])),
      h("section", { class: "card" }, h("h2", {}, t("models.metrics")), metricsTable(m)),
      h("section", { class: "card" }, h("h2", {}, t("models.chosen", { family: familyName(m.family) })),
        Object.keys(m.params || {}).length
          ? dataTable(t("models.params"), [t("models.param"), t("models.value")], Object.entries(m.params).map(([k, v]) => h("tr", {},
            h("th", { scope: "row" }, h("code", {}, k)), h("td", {}, h("code", {}, typeof v === "number" ? num(v, 6) : JSON.stringify(v))))), { class: "params" })
          : h("p", { class: "muted" }, t("models.no_params"))),
    ];
    const rank = (file) => (PLOT_ORDER.includes(file) ? PLOT_ORDER.indexOf(file) : PLOT_ORDER.length);
    const plots = (m.plots || []).slice().sort((a, b) => rank(a) - rank(b));
    if (plots.length) sections.push(h("section", { class: "card" }, h("h2", {}, t("models.plots")), h("div", { class: "plots" }, plots.map((p) => plotFigure(m.ref, p, mine)))));
    const inputs = m.inputs || [];
    const ignored = Object.entries(m.ignored || {});
    sections.push(h("section", { class: "card" }, h("h2", {}, t("models.inputs")),
      inputs.length ? dataTable(t("models.inputs"), [t("data.column"), t("models.input_kind"), t("models.example")], inputs.map((x) => h("tr", {},
        h("th", { scope: "row" }, h("code", {}, x.name)),
        h("td", {}, tOr(`input.${x.kind}`, x.kind), x.nullable ? h("small", { class: "muted" }, ` ${t("models.optional")}`) : null),
        h("td", {}, x.choices ? x.choices.map(String).join(", ") : x.example === undefined || x.example === null ? t("common.none") : h("code", {}, String(x.example))))),
      { class: "inputs" }) : h("p", { class: "muted" }, m.image ? t("models.image_input") : t("common.none")),
      ignored.length ? h("p", { class: "muted" }, t("models.ignored", { columns: ignored.map(([k, why]) => `${k} (${why})`).join(", ") })) : null,
      m.classes ? h("p", {}, t("models.classes", { classes: m.classes.map(String).join(", ") })) : null));

    const compareArea = h("div", { "aria-live": "polite" });
    const others = versions.filter((v) => v.ref !== m.ref);
    const pick = h("select", { name: "compare" }, h("option", { value: "" }, t("compare.choose")), others.map((v) => h("option", { value: v.ref }, v.ref)));
    pick.addEventListener("change", async () => {
      if (!pick.value) { fill(compareArea); return; }
      try {
        const other = await api.get(`/models/${enc(pick.value)}`);
        if (mine.alive && pick.value === other.ref) fill(compareArea, compareTable(m, other));
      } catch (err) { fill(compareArea, h("p", { class: "error" }, messageOf(err))); }
    });
    sections.push(h("section", { class: "card" }, h("h2", {}, t("models.versions")),
      h("ul", { class: "versions" }, versions.map((v) => h("li", {},
        v.ref === m.ref ? h("strong", {}, v.ref) : h("a", { href: `#/models/${enc(v.ref)}` }, v.ref),
        h("span", { class: "muted" }, ` · ${familyName(v.family)} · ${v.metric ? `${metricName(v.metric.name)} ${score(v.metrics?.[v.metric.name])}` : ""} · ${date(v.created_at)}`)))),
      others.length ? field(t("compare.with"), pick) : h("p", { class: "muted" }, t("compare.none")),
      compareArea));
    if (can("deploy")) sections.push(h("section", { class: "card" }, deployForm(m.ref)));
    fill(content, sections);
  })().catch((err) => { if (mine.alive && err.status !== 401) showError(box, err); });
}
