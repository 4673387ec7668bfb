// The Data page's batch predictions: run a dataset through a deployment, and follow the jobs (POST/GET/DELETE /batches).
import { api, can, confirmDialog, duration, enc, errorBox, every, field, fill, h, messageOf, notice, num, showError, statusBadge, t } from "./core.js";
import { NAME_PATTERN, dataTable, emptyRow, newestFirst } from "./build.js";

export function batchSection(mine) {
  const box = errorBox();
  const body = h("tbody");
  const form = can("deploy") ? batchForm(mine, () => refresh()) : null;
  const section = h("section", { class: "card batches" }, h("h2", {}, t("batch.title")), form,
    h("h3", {}, t("batch.jobs")), box,
    dataTable(t("batch.jobs"), [t("batch.job"), t("batch.deployment"), t("data.dataset"), t("train.status"), t("batch.progress"),
      t("batch.output"), ""], body, { class: "batch-jobs" }));

  async function refresh() {
    try {
      const answer = await api.get("/batches");
      if (!mine.alive) return false;
      showError(box, null);
      fill(body, answer.batches.length ? answer.batches.map(jobRow) : emptyRow(7, t("batch.no_jobs")));
    } catch (err) {
      if (mine.alive && err.status !== 401) showError(box, err);
    }
    return true;
  }
  every(mine, 1000, refresh);
  return section;
}

function jobRow(job) {
  const running = job.status === "running";
  const left = job.eta_s == null ? null : t("batch.left", { time: duration(job.eta_s) });
  const rate = job.rows_per_s == null ? null : t("batch.rate", { rate: num(job.rows_per_s, 1) });
  const cancel = running && can("deploy") ? h("button", { type: "button", class: "danger small", onclick: async () => {
    if (!(await confirmDialog(t("batch.cancel_confirm"), t("batch.cancel")))) return;
    try {
      await api.del(`/batches/${enc(job.id)}`);
      notice(t("batch.cancelled_notice"));
    } catch (err) { notice(messageOf(err), "bad"); }
  } }, t("batch.cancel")) : null;
  return h("tr", { dataset: { job: job.id, status: job.status } },
    h("th", { scope: "row" }, h("code", {}, job.id)),
    h("td", {}, `${job.deployment}/${job.endpoint}`),
    h("td", {}, h("a", { href: `#/data/${enc(job.dataset)}` }, job.dataset)),
    h("td", {}, statusBadge(job.status), job.error ? h("small", { class: "muted error-text" }, ` ${job.error}`) : null),
    h("td", { class: "batch-progress" },
      h("progress", { max: job.rows_total || 1, value: job.rows_done, "aria-label": t("batch.progress") }), " ",
      h("span", { class: "rows" }, t("batch.rows", { done: num(job.rows_done, 0), total: num(job.rows_total, 0) })),
      job.rows_failed ? h("small", { class: "failed" }, ` ${t("batch.failed", { n: num(job.rows_failed, 0) })}`) : null,
      running && rate ? h("small", { class: "muted" }, ` · ${rate}`) : null,
      running && left ? h("small", { class: "muted" }, ` · ${left}`) : null),
    h("td", {}, job.result ? h("a", { href: `#/data/${enc(job.result)}` }, job.result) : t("common.none")),
    h("td", {}, cancel));
}

function batchForm(mine, started) {
  const dataset = h("select", { name: "batch_dataset", required: true });
  const deployment = h("select", { name: "batch_deployment", required: true });
  const endpoint = h("input", { type: "text", name: "batch_endpoint", value: "predict", required: true, spellcheck: "false", autocomplete: "off" });
  const output = h("input", { type: "text", name: "batch_output", pattern: NAME_PATTERN, spellcheck: "false", autocomplete: "off" });
  const concurrency = h("input", { type: "number", name: "batch_concurrency", min: 1, max: 32, step: 1, value: "4" });
  const box = errorBox();
  const submit = h("button", { type: "submit" }, t("batch.start"));
  const form = h("form", { class: "batch-form", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    showError(box, null);
    const lanes = Number(concurrency.value);
    let problem = null;
    if (!dataset.value || !deployment.value) problem = t("batch.pick");
    else if (!Number.isInteger(lanes) || lanes < 1) problem = t("batch.bad_concurrency");
    else if (output.value.trim() && !new RegExp(`^${NAME_PATTERN}$`).test(output.value.trim())) problem = t("train.bad_name");
    if (problem) { showError(box, new Error(problem)); return; }
    const body = { deployment: deployment.value, dataset: dataset.value, endpoint: endpoint.value.trim() || "predict", concurrency: lanes };
    if (output.value.trim()) body.output = output.value.trim();
    submit.disabled = true;
    try {
      const job = await api.post("/batches", body);
      notice(t("batch.started_notice", { id: job.id }));
      if (mine.alive) await started();
    } catch (err) {
      showError(box, err);
    } finally {
      submit.disabled = false;
    }
  } },
  h("p", { class: "muted" }, t("batch.intro")), box,
  h("div", { class: "row wrap" }, field(t("data.dataset"), dataset), field(t("batch.deployment"), deployment),
    field(t("batch.endpoint"), endpoint), field(t("batch.output_name"), output, t("batch.output_hint")),
    field(t("batch.concurrency"), concurrency)),
  h("div", { class: "row" }, submit));

  Promise.all([api.get("/datasets"), api.get("/deployments")]).then(([sets, deployed]) => {
    if (!mine.alive) return;
    fill(dataset, newestFirst(sets.datasets).map((d) => h("option", { value: d.ref }, d.ref)));
    fill(deployment, deployed.deployments.map((d) => h("option", { value: d.name }, d.name)));
  }).catch((err) => showError(box, err));
  return form;
}
