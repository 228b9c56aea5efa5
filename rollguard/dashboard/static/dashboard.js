// rollguard dashboard: renders /api/overview and /api/experiments/NAME, and refreshes them
// when /api/events says something changed. It lays out what the worker published; it
// decides nothing.
(function () {
  "use strict";

  const app = document.getElementById("app");
  const live = document.getElementById("live");
  const banner = document.getElementById("banner");
  const source = document.getElementById("source");
  const state = {route: null, name: null, data: null, charts: {}, loading: false,
                 again: false, version: -1, renders: 0};
  window.rollguard = state; // for the curious, in the browser's console

  const ACTION_COLOR = {start: "#64748b", set_traffic: "#0891b2", promote: "#16a34a",
                        rollback: "#dc2626", hold: "#ca8a04", complete: "#15803d",
                        pause: "#7c3aed", resume: "#7c3aed"};
  const ARM_COLORS = ["#1d4ed8", "#ea580c", "#7c3aed", "#0d9488", "#be185d", "#4d7c0f"];
  const BAND = "rgba(37, 99, 235, 0.18)";

  // -- formatting ---------------------------------------------------------------------------
  const fmt = {
    num(x, digits) {
      if (x == null) return "–";
      if (Number.isInteger(x) && Math.abs(x) >= 1000) return x.toLocaleString("en");
      return String(Number(x.toPrecision(digits || 4)));
    },
    signed(x) {
      if (x == null) return "n/a";
      const s = Math.abs(x) < 100 ? x.toFixed(3) : x.toPrecision(4);
      return (x >= 0 && !s.startsWith("-") ? "+" : "") + s;
    },
    count(n) { return n == null ? "–" : Number(n).toLocaleString("en"); },
    pct(x) { return x == null ? "–" : String(Number((100 * x).toPrecision(3))) + "%"; },
    conf(c) { return c == null ? "" : String(Number((100 * c).toPrecision(4))) + "%"; },
    interval(e, lo, hi) {
      if (e == null) return "–";
      return `${fmt.signed(e)} [${fmt.signed(lo)}, ${fmt.signed(hi)}]`;
    },
    age(s) {
      if (s == null) return "–";
      if (s < 1.5) return "just now";
      if (s < 90) return `${Math.round(s)} s ago`;
      if (s < 5400) return `${Math.round(s / 60)} min ago`;
      if (s < 172800) return `${Math.round(s / 3600)} h ago`;
      return `${Math.round(s / 86400)} d ago`;
    },
    time(ts) {
      if (ts == null) return "–";
      return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")
        .replace("Z", " UTC");
    },
    seconds(s) { return s == null ? "–" : `${fmt.num(s, 3)} s`; },
  };

  // -- DOM ----------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function badge(text, kind) {
    return h("span", {class: `badge b-${kind || text}`}, text);
  }

  function table(id, headers, rows, caption) {
    return h("div", {class: "table-wrap"}, h("table", {class: "grid", id},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map(x => h("th", {}, x)))),
      h("tbody", {}, rows.map(cells => {
        const attrs = cells.attrs || {};
        return h("tr", attrs, cells.map(c => c instanceof Node ? h("td", {}, c) :
          h("td", {class: typeof c === "number" ? "num" : null}, c == null ? "–" : c)));
      }))));
  }

  function section(id, title, ...body) {
    return h("section", {id, class: "card"}, title ? h("h2", {}, title) : null, ...body);
  }

  // mode interleave routes its candidates as shadow arms: each request shows the merged list
  const shadowWord = mode => mode === "interleave" ? "interleaved" : "shadow";

  function trafficText(traffic, shadow, mode) {
    const parts = Object.entries(traffic || {}).map(([a, s]) => `${a} ${fmt.pct(s)}`);
    for (const a of shadow || []) parts.push(`${a} ${shadowWord(mode)}`);
    return parts.join(" · ") || "–";
  }

  function guardrailSummary(counts, srm) {
    const parts = [];
    for (const k of ["fail", "undecided", "pass"]) {
      if (counts && counts[k]) parts.push(h("span", {class: `st-${k}`}, `${counts[k]} ${k}`));
    }
    if (srm) parts.push(h("span", {class: `st-${srm}`}, `SRM ${srm}`));
    if (!parts.length) return "none";
    const out = [];
    parts.forEach((p, i) => { if (i) out.push(" · "); out.push(p); });
    return h("span", {}, out);
  }

  // -- data ---------------------------------------------------------------------------------
  function route() {
    const path = location.pathname;
    if (path.startsWith("/experiments/")) {
      return {route: "experiment", name: decodeURIComponent(path.slice("/experiments/".length))};
    }
    return {route: "list", name: null};
  }

  async function load() {
    if (state.loading) { state.again = true; return; }
    state.loading = true;
    try {
      do {
        state.again = false;
        const url = state.route === "experiment"
          ? `/api/experiments/${encodeURIComponent(state.name)}` : "/api/overview";
        const response = await fetch(url, {cache: "no-store"});
        const body = await response.json();
        if (body.version != null) state.version = body.version;
        if (response.status === 404) renderMissing(body.error);
        else if (state.route === "experiment") renderExperiment(body);
        else renderList(body);
        state.renders += 1;
        if (performance.mark) performance.mark("rollguard:rendered"); // bench_dashboard.py
      } while (state.again);
    } catch (err) {
      showBanner(`The dashboard server does not answer (${err.message}): is \`rollguard ` +
                 "dashboard` still running? The page retries by itself.");
    } finally {
      state.loading = false;
    }
  }

  function showBanner(text) {
    banner.textContent = text;
    banner.hidden = !text;
  }

  function showStatus(status) {
    if (!status) return;
    source.textContent = `prefix ${status.prefix} on ${status.bootstrap}`;
    if (status.problem) {
      showBanner(`Kafka at ${status.bootstrap} has a problem since ` +
                 `${fmt.time(status.problem_since)} (${status.problem}): the figures shown are ` +
                 "the last ones read; they update again once it answers.");
    } else {
      showBanner("");
    }
  }

  // Every second (every five while the tab is hidden) ask which experiments changed since
  // the version of what the page shows, and fetch again only what it shows.
  async function follow() {
    try {
      const response = await fetch(`/api/changes?since=${Math.max(state.version, 0)}`,
                                   {cache: "no-store"});
      const c = await response.json();
      live.textContent = "live";
      live.className = "live on";
      if (c.restarted || (c.version > state.version && (state.route === "list" ||
          c.changed.includes(state.name) || c.changed.includes("")))) {
        load();
      } else if (c.version > state.version) {
        state.version = c.version;
      }
    } catch (err) {
      live.textContent = "reconnecting…";
      live.className = "live off";
    }
    setTimeout(follow, document.hidden ? 5000 : 1000);
  }

  // -- the list page ------------------------------------------------------------------------
  function renderList(body) {
    document.title = "rollguard: experiments";
    showStatus(body.status);
    const rows = body.experiments.map(e => {
      const latest = e.latest;
      const decision = latest ? h("div", {class: "decision-cell"},
        badge(latest.action), " ",
        h("span", {class: "reason", title: latest.reason}, latest.reason)) : "no decision yet";
      const row = [
        h("a", {href: `/experiments/${encodeURIComponent(e.name)}`}, e.name),
        e.mode, e.champion, e.candidates.join(", "),
        trafficText(e.traffic, e.shadow, e.mode),
        Object.entries(e.labelled).map(([a, n]) => `${a} ${fmt.count(n)}`).join(" · "),
        h("div", {}, e.deltas.map(d => h("div", {class: "delta"},
          e.deltas.length > 1 ? `${d.candidate}: ` : "",
          fmt.interval(d.estimate, d.lower, d.upper),
          d.confidence != null && d.estimate != null ? ` (${fmt.conf(d.confidence)} CS)` : "",
          d.status === "dropped" ? " dropped" : ""))),
        guardrailSummary(e.guardrails, e.srm),
        h("div", {}, latest && latest.action === e.state ? null : [badge(e.state), " "],
          decision),
        latest ? fmt.age(latest.age_s) : "–",
      ];
      row.attrs = {dataset: {experiment: e.name, state: e.state}};
      return row;
    });
    const waiting = !body.status.caught_up;
    const empty = body.experiments.length === 0 ? h("p", {class: "empty"}, waiting
      ? "Reading the topics…"
      : `Nothing has been published under the topic prefix '${body.status.prefix}' yet: ` +
        "start a worker (rollguard worker) or give the prefix it uses with --topic-prefix.") : null;
    const unattributed = body.unattributed_dead_letters;
    app.replaceChildren(...[
      h("h1", {}, "Experiments"),
      h("p", {class: "muted"}, `${body.experiments.length} experiment` +
        `${body.experiments.length === 1 ? "" : "s"}; Δ = candidate − champion of the primary ` +
        "metric, higher is better: estimate [anytime-valid bounds] at the confidence shown."),
      empty || table("experiments", ["experiment", "mode", "champion", "candidates",
        "traffic", "labelled n", "Δ estimate [bounds]", "guardrails", "state · latest decision",
        "decided"], rows),
      unattributed.total ? h("p", {class: "muted"}, `${fmt.count(unattributed.total)} dead ` +
        `letter${unattributed.total === 1 ? "" : "s"} could not be tied to an experiment ` +
        "(unreadable input, labels).") : null].filter(Boolean));
  }

  function renderMissing(text) {
    app.replaceChildren(h("nav", {}, h("a", {href: "/"}, "← all experiments")),
      h("h1", {}, state.name), h("p", {class: "empty"}, `Nothing to show: ${text}.`));
  }

  // -- one experiment -----------------------------------------------------------------------
  function renderExperiment(e) {
    document.title = `rollguard: ${e.name}`;
    showStatus(e.status);
    state.data = e;
    const latest = e.latest;
    const conf = fmt.conf(e.confidence);
    const head = [
      h("nav", {}, h("a", {href: "/"}, "← all experiments")),
      h("h1", {}, e.name, " ", badge(e.mode || "?", "mode"), " ", badge(e.state)),
      h("p", {class: "facts"}, `champion ${e.champion}`,
        e.champion !== e.original_champion ? ` (was ${e.original_champion})` : "",
        ` · candidates ${e.candidates.join(", ")} · metric ${e.metric} · margin ${e.margin}` +
        ` · α ${e.alpha} · min_samples ${fmt.count(e.min_samples)} · ` +
        `${fmt.count(e.records)} records · traffic ${trafficText(e.traffic, e.shadow, e.mode)}`),
      section("latest-decision", null, latest
        ? h("p", {class: "latest"}, h("strong", {}, "Latest decision "), badge(latest.action),
            ` seq ${latest.seq} at ${fmt.time(latest.ts)} (event time), published ` +
            `${fmt.age(latest.age_s)}: `, h("span", {class: "reason"}, latest.reason))
        : h("p", {class: "latest"}, "No control event yet."),
        e.paused ? h("p", {class: "latest"}, h("strong", {}, "Paused "), `by ${e.paused.by}: ` +
          `${e.paused.reason}; no automatic decision until it is resumed.`) : null),
      // manual control (promote / rollback / pause / resume): only when the dashboard runs
      // with --allow-control; every press carries the operator's token
      h("section", {id: "controls", class: "card controls", hidden: !e.allow_control,
                    dataset: {experiment: e.name}},
        e.allow_control ? controlsBlock(e) : null),
    ];
    const charts = section("delta", "Δ over event time",
      h("p", {class: "muted"}, (e.metric === "preference" ? "Δ = P(win) − P(loss) of the " +
        "candidate's ranking in the interleaved lists" : `Δ = candidate − champion of ` +
        `${e.metric} per request`) + " (higher is better): the estimate, and its " +
        `anytime-valid confidence sequence (${conf}) as a band; ` +
        "the dashed red line is −margin. Promotion needs the band above it, a rollback " +
        "follows when the band falls below it. Vertical lines are the control events; hover " +
        "one for its reason."),
      e.candidates.map((c, i) => h("div", {class: "chart-box"},
        h("h3", {}, `${c} vs ${e.original_champion}`),
        h("div", {class: "chart", id: `chart-delta-${i}`, dataset: {candidate: c}}))),
      e.series.bake ? h("div", {class: "chart-box"},
        h("h3", {}, `Bake window: ${e.bake ? e.bake.champion + " vs " + e.bake.former
                                           : "new vs former champion"}`),
        h("div", {class: "chart", id: "chart-bake"})) : null,
      e.series.points === 0 ? h("p", {class: "empty"}, "No history point yet: the worker " +
        "publishes them to the history topic as the experiment runs (docs/history.md).") : null);
    const page = document.createDocumentFragment();
    page.append(...head, charts,
      section("decisions", "Decisions", decisionsTable(e)),
      section("arms", "Per arm", armsTable(e)),
      section("tests", "Tests: Δ and guardrails per candidate", testsBlock(e)),
      section("traffic", "Traffic over time",
        h("div", {class: "chart", id: "chart-traffic"}), srmBlock(e)),
      section("segments", "Per segment", segmentsTable(e)),
      section("labels", "Labels", labelsBlock(e)),
      section("dead-letters", "Dead letters", deadLettersBlock(e)),
      section("counters", "Other counters", countersBlock(e)));
    // the charts drawn so far move into the new page: they get the new data, not a redraw
    const oldControls = document.getElementById("controls");
    const newControls = page.querySelector("#controls");
    if (oldControls && newControls && !newControls.hidden &&
        oldControls.dataset.experiment === newControls.dataset.experiment) {
      newControls.replaceWith(oldControls);  // keep what the person typed
    }
    for (const el of page.querySelectorAll(".chart[id]")) {
      const old = document.getElementById(el.id);
      if (old && old.dataset.candidate === el.dataset.candidate) el.replaceWith(old);
    }
    app.replaceChildren(page);
    drawCharts(e);
  }

  function controlsBlock(e) {
    const field = (name, label, type, hint) => h("label", {}, label, " ",
      h("input", {type, name, placeholder: hint, autocomplete: "off"}));
    const answer = h("p", {class: "control-answer", role: "status"});
    const candidate = e.candidates.length > 1
      ? h("label", {}, "candidate ", h("select", {name: "candidate"},
          e.candidates.map(c => h("option", {value: c}, c))))
      : null;
    const block = h("div", {},
      h("h2", {}, "Steer by hand"),
      h("p", {class: "muted"}, "The worker that evaluates this experiment applies the request " +
        "where its analysis is and publishes the control event with who and why; pause " +
        "freezes traffic changes and automatic decisions until resume."),
      h("p", {}, field("reason", "reason", "text", "why (recorded in the event)"), " ",
        field("by", "by", "text", "your name"), " ",
        field("token", "token", "password", "control token"), " ", candidate),
      h("p", {}, ACTIONS.map(a => h("button", {type: "button", class: `act act-${a}`,
                                               dataset: {action: a}}, a))),
      answer);
    for (const button of block.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", () => steer(e.name, button.dataset.action, block,
                                                   answer));
    }
    return block;
  }

  const ACTIONS = ["pause", "resume", "promote", "rollback"];

  async function steer(name, action, block, answer) {
    const value = n => { const el = block.querySelector(`[name=${n}]`); return el ? el.value : ""; };
    const body = {action, reason: value("reason"), by: value("by") || null,
                  candidate: action === "promote" ? (value("candidate") || null) : null};
    answer.textContent = `${action}: waiting for the worker…`;
    answer.className = "control-answer pending";
    try {
      const response = await fetch(`/api/experiments/${encodeURIComponent(name)}/control`, {
        method: "POST", cache: "no-store",
        headers: {"Content-Type": "application/json", "X-Rollguard-Token": value("token")},
        body: JSON.stringify(body)});
      const data = await response.json();
      answer.textContent = response.ok ? data.sentence : data.error;
      answer.className = `control-answer ${response.ok ? "done" : "refused"}`;
    } catch (error) {
      answer.textContent = `The dashboard did not answer (${error}): is it still running?`;
      answer.className = "control-answer refused";
    }
  }

  function decisionsTable(e) {
    if (!e.decisions.length) return h("p", {class: "empty"}, "No control event yet.");
    return table("decision-table", ["seq", "event time", "action", "traffic", "reason",
                                    "published"],
      e.decisions.map(d => {
        const row = [d.seq, fmt.time(d.ts), badge(d.action), trafficText(d.traffic, null),
                     h("span", {class: "reason"}, d.reason), fmt.age(d.age_s)];
        row.attrs = {id: `decision-${d.seq}`};
        return row;
      }));
  }

  function armsTable(e) {
    const keys = [...new Set(e.arms.flatMap(a => Object.keys(a.outcomes)))]
      .filter(k => k !== e.arms[0].metric);
    // preference (mode interleave) compares the arms in one list: no figure of its own per arm
    const primary = e.metric === "preference" ? [] : [e.metric];
    return table("arm-table", ["arm", "role", "traffic", "served share (observed)", "scored",
      "error rate (estimate)", "latency p50 / p95 / p99 ms (estimate, ±1%)", "labelled",
      ...primary.map(m => `${m} (estimate)`), ...keys.map(k => `${k} (estimate)`)],
      e.arms.map(a => [a.arm, a.role, a.shadow ? shadowWord(e.mode) : fmt.pct(a.traffic),
        fmt.pct(a.served_share), fmt.count(a.scored), fmt.num(a.error_rate),
        [a.latency_p50_ms, a.latency_p95_ms, a.latency_p99_ms].map(x => fmt.num(x, 3))
          .join(" / "),
        fmt.count(a.labelled), ...primary.map(() => fmt.num(a.primary)),
        ...keys.map(k => fmt.num(a.outcomes[k]))]),
      "Figures of the arms themselves, from the statistics snapshot: estimates, without " +
      "bounds; the decision rests on the tests below.");
  }

  function guardrailRows(guardrails) {
    return guardrails.map(g => {
      const bounds = g.lower != null || g.upper != null
        ? `[${fmt.num(g.lower)}, ${fmt.num(g.upper)}] (${fmt.conf(g.confidence)} CS)` : "–";
      const extra = g.e_fail != null ? `e-values: fail ${fmt.num(g.e_fail, 3)}, pass ` +
        `${fmt.num(g.e_pass, 3)} (decides at ${fmt.num(g.threshold, 3)}, ` +
        `${fmt.conf(g.confidence)} confidence)` : "";
      const row = [g.guardrail, h("span", {class: `st-${g.status}`}, g.status),
                   g.limit || "–", fmt.num(g.estimate) +
                   (g.estimate_of ? ` (${g.estimate_of})` : ""), bounds, extra || "–",
                   fmt.count(g.n)];
      row.attrs = {dataset: {status: g.status}};
      return row;
    });
  }

  function testsBlock(e) {
    const blocks = e.tests.map(t => h("div", {class: "test"},
      h("h3", {}, `${t.candidate} `, t.status === "dropped" ? badge("dropped", "rollback") : null),
      h("p", {}, `Δ estimate ${fmt.signed(t.delta.estimate)}; bounds ` +
        `[${fmt.signed(t.delta.lower)}, ${fmt.signed(t.delta.upper)}] ` +
        `(${fmt.conf(t.confidence)} anytime-valid CS, α ${fmt.num(t.alpha)}); n ` +
        Object.entries(t.n).map(([a, n]) => `${a} ${fmt.count(n)}`).join(", ") +
        ` · margin ${e.margin}`, h("br"), h("span", {class: "muted"}, t.delta.method || "")),
      t.interleaving ? h("p", {class: "interleaving"}, `Interleaved lists: ${t.candidate} won ` +
        `${fmt.count(t.interleaving.wins)}, lost ${fmt.count(t.interleaving.losses)}, tied ` +
        `${fmt.count(t.interleaving.ties)} of the requests with engagement ` +
        `(${fmt.count(t.interleaving.no_engagement)} without).`) : null,
      t.guardrails.length
        ? table(null, ["guardrail", "status", "limit", "estimate", "bounds", "test", "n"],
                guardrailRows(t.guardrails))
        : h("p", {class: "muted"}, "No guardrail.")));
    if (e.bake) {
      const b = e.bake;
      blocks.push(h("div", {class: "test"},
        h("h3", {}, `Bake window: ${b.champion} vs ${b.former}`),
        h("p", {}, `since ${fmt.time(b.since)} for ${fmt.num(b.duration)} s and ` +
          `${fmt.count(b.min_samples)} labelled outcomes; Δ estimate ` +
          `${fmt.signed(b.delta.estimate)}, bounds [${fmt.signed(b.delta.lower)}, ` +
          `${fmt.signed(b.delta.upper)}] (${fmt.conf(b.confidence)} CS); n ` +
          Object.entries(b.n).map(([a, n]) => `${a} ${fmt.count(n)}`).join(", ")),
        b.guardrails.length ? table(null, ["guardrail", "status", "limit", "estimate", "bounds",
          "test", "n"], guardrailRows(b.guardrails)) : null));
    }
    if (e.canary_step && (e.state === "running" || e.state === "waiting")) {
      blocks.push(h("p", {}, `Canary step ${e.canary_step.index} of ${e.canary_step.of} ` +
        `(${fmt.pct(e.canary_step.share)} to the candidates).`));
    }
    if (e.prob_best) {
      blocks.push(h("p", {}, "Bandit: posterior probability of being best (an estimate " +
        "that only moves traffic) " + Object.entries(e.prob_best)
          .map(([a, p]) => `${a} ${fmt.num(p, 3)}`).join(", ") + "."));
    }
    return blocks.length ? blocks : h("p", {class: "empty"}, "No test figures yet.");
  }

  function srmBlock(e) {
    if (!e.srm) return h("p", {class: "muted"}, "No sample-ratio mismatch test in this " +
                         "experiment (it needs a split mode and the srm guardrail).");
    const s = e.srm;
    const arms = Object.keys({...s.shares, ...s.observed});
    return h("div", {id: "srm"},
      h("p", {}, "Sample-ratio mismatch: ", h("span", {class: `st-${s.status}`}, s.status),
        ` over ${fmt.count(s.n)} served requests; anytime-valid p-value ` +
        `${fmt.num(s.p_value, 3)} (fails below α, at ${fmt.conf(s.confidence)} confidence).`),
      table(null, ["arm", "published share", "observed share (estimate)"],
            arms.map(a => [a, fmt.pct(s.shares[a]), fmt.pct(s.observed[a])])));
  }

  function segmentsTable(e) {
    if (!e.segments.length) return h("p", {class: "muted"}, "No segment statistics.");
    const arms = e.arms.map(a => a.arm);
    return table("segment-table", ["segment", "value",
      ...arms.map(a => `${a}: labelled · ${e.metric} (estimate)`)],
      e.segments.map(s => [s.key, s.value, ...arms.map(a => {
        const f = s.arms[a] || {};
        return `${fmt.count(f.count)} · ${fmt.num(f.primary)}`;
      })]));
  }

  function labelsBlock(e) {
    const l = e.labels;
    return table("label-table", ["scored requests", "labelled", "waiting for a label",
      "late (after label_ttl, not used)", "expired (never labelled)",
      "label delay p50 / p90 / p99 (estimate)"],
      [[fmt.count(l.scored), fmt.count(l.labelled), fmt.count(l.pending), fmt.count(l.late),
        fmt.count(l.expired), [l.delay_p50_s, l.delay_p90_s, l.delay_p99_s]
          .map(fmt.seconds).join(" / ")]]);
  }

  function deadLettersBlock(e) {
    const d = e.dead_letters;
    const parts = [];
    parts.push(d.by_reason.length
      ? table("dead-letter-table", ["topic", "reason", "count", "scope"],
              d.by_reason.map(r => [r.topic, r.reason, fmt.count(r.count), r.scope]))
      : h("p", {class: "muted"}, "No dead letters."));
    if (d.recent.length) {
      parts.push(h("h3", {}, "Latest of this experiment"), table(null, ["published", "topic",
        "offset", "why"], d.recent.map(r => [fmt.age(r.published_at != null
          ? Date.now() / 1000 - r.published_at : null), r.topic, r.offset, r.error])));
    }
    return parts;
  }

  function countersBlock(e) {
    const entries = Object.entries(e.counters || {});
    if (!entries.length) return h("p", {class: "muted"}, "None.");
    return table("counter-table", ["counter", "count"],
                 entries.map(([k, v]) => [k, fmt.count(v)]));
  }

  // -- charts (uPlot) -----------------------------------------------------------------------
  function annotations() {
    function place(u) {
      let layer = u.over.querySelector(".annotations");
      if (!layer) { layer = h("div", {class: "annotations"}); u.over.append(layer); }
      const decisions = (state.data && state.data.decisions) || [];
      const [lo, hi] = [u.scales.x.min, u.scales.x.max];
      layer.replaceChildren(...decisions.filter(d => d.ts != null && d.ts >= lo && d.ts <= hi)
        .map((d, i) => {
          const el = h("a", {class: `annotation a-${d.action}`, href: `#decision-${d.seq}`,
                             title: `${d.action} (seq ${d.seq}) at ${fmt.time(d.ts)}: ${d.reason}`,
                             dataset: {action: d.action, seq: d.seq}}, d.action);
          el.style.left = `${u.valToPos(d.ts, "x")}px`;
          el.style.top = `${(i % 3) * 16}px`;
          return el;
        }));
    }
    return {hooks: {
      draw: [u => {
        const decisions = (state.data && state.data.decisions) || [];
        const ctx = u.ctx;
        ctx.save();
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.setLineDash([5 * devicePixelRatio, 3 * devicePixelRatio]);
        for (const d of decisions) {
          if (d.ts == null || d.ts < u.scales.x.min || d.ts > u.scales.x.max) continue;
          const x = Math.round(u.valToPos(d.ts, "x", true));
          ctx.strokeStyle = ACTION_COLOR[d.action] || "#333";
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
        }
        ctx.restore();
        place(u);
      }],
    }};
  }

  const utc = ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");

  function chart(key, el, opts, data) {
    const shape = opts.series.map(s => s.label).join("|");
    const old = state.charts[key];
    if (old && old.shape === shape && old.u.root.isConnected && old.el === el) {
      old.u.setData(data);
      return old.u;
    }
    if (old) old.u.destroy();
    const width = Math.max(320, el.clientWidth || 800);
    const u = new uPlot({width, height: opts.height || 280, tzDate: utc, ...opts}, data, el);
    state.charts[key] = {u, shape, el};
    return u;
  }

  function deltaOptions(label, conf, margin) {
    const signed = (u, v) => fmt.signed(v);
    return {
      scales: {x: {time: true}},
      series: [
        {label: "event time", value: (u, v) => fmt.time(v)},
        {label: `${label} estimate`, stroke: "#1d4ed8", width: 2, value: signed,
         points: {show: false}},
        {label: `upper bound (${conf} CS)`, stroke: "rgba(29, 78, 216, 0.55)", width: 1,
         value: signed, points: {show: false}},
        {label: `lower bound (${conf} CS)`, stroke: "rgba(29, 78, 216, 0.55)", width: 1,
         value: signed, points: {show: false}},
        {label: `−margin (${fmt.num(-margin)})`, stroke: "#dc2626", width: 1.5, dash: [8, 5],
         value: signed, points: {show: false}},
      ],
      bands: [{series: [2, 3], fill: BAND}],
      axes: [{}, {size: 64, values: (u, ticks) => ticks.map(t => fmt.signed(t))}],
      plugins: [annotations()],
    };
  }

  function drawCharts(e) {
    const s = e.series;
    const conf = fmt.conf(e.confidence);
    const margin = e.margin || 0;
    const keep = new Set();
    e.candidates.forEach((c, i) => {
      const el = document.getElementById(`chart-delta-${i}`);
      const d = s.delta[c];
      if (!el || !d || !s.points) return;
      const key = `delta-${c}`;
      keep.add(key);
      chart(key, el, deltaOptions("Δ", conf, margin),
            [s.ts, d.estimate, d.upper, d.lower, s.ts.map(() => -margin)]);
    });
    const bakeEl = document.getElementById("chart-bake");
    if (bakeEl && s.bake) {
      keep.add("bake");
      chart("bake", bakeEl, deltaOptions("bake Δ", fmt.conf(e.bake ? e.bake.confidence
                                                                    : e.confidence), margin),
            [s.ts, s.bake.estimate, s.bake.upper, s.bake.lower, s.ts.map(() => -margin)]);
    }
    const trafficEl = document.getElementById("chart-traffic");
    const arms = Object.keys(s.traffic);
    if (trafficEl && s.points && arms.length) {
      keep.add("traffic");
      chart("traffic", trafficEl, {
        height: 200,
        scales: {x: {time: true}, y: {range: [0, 1]}},
        series: [{label: "event time", value: (u, v) => fmt.time(v)},
          ...arms.map((a, i) => ({label: `${a} share`, stroke: ARM_COLORS[i % ARM_COLORS.length],
                                  width: 2, value: (u, v) => fmt.pct(v), points: {show: false},
                                  paths: uPlot.paths.stepped({align: 1})}))],
        axes: [{}, {size: 56, values: (u, ticks) => ticks.map(t => fmt.pct(t))}],
        plugins: [annotations()],
      }, [s.ts, ...arms.map(a => s.traffic[a])]);
    }
    for (const key of Object.keys(state.charts)) {
      if (!keep.has(key)) { state.charts[key].u.destroy(); delete state.charts[key]; }
    }
  }

  window.addEventListener("resize", () => {
    for (const c of Object.values(state.charts)) {
      c.u.setSize({width: Math.max(320, c.el.clientWidth), height: c.u.height});
    }
  });

  // -- start --------------------------------------------------------------------------------
  Object.assign(state, route());
  load().then(follow);
})();
