// The Models pages: every registered version; one version's metrics, plots, inputs, versions, comparison and Deploy.
import { api, can, date, duration, enc, errorBox, errorFrom, field, fill, h, messageOf, notice, num, request, showError, t, tOr } from "./core.js";
import { PLOT_ORDER, metricName, familyName, taskName, greaterIsBetter, score, dataTable, summaryList, crumbs, emptyRow, newestFirst, deployForm } from "./build.js";

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
