// The Train page (start a job) and a training job's live page: phase, time used, trials and their chart.
import { api, can, confirmDialog, date, duration, enc, errorBox, every, field, fill, h, messageOf, notice, num, s, showError, statusBadge, t, tOr } from "./core.js";
import { METRICS, LOWER_IS_BETTER, FINISHED, NAME_PATTERN, metricName, familyName, taskName, kindName, phaseName, score, dataTable, summaryList, crumbs, emptyRow, newestFirst, deployForm } from "./build.js";

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
