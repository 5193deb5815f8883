/* thirdring dashboard: reads the stats API with the viewer token from the login field.
 *
 * No build step: plain ES2020 and Chart.js (window.Chart, vendored). The token lives in
 * sessionStorage (gone when the tab closes) and is sent as "Authorization: Bearer".
 * body[data-state] is "idle", "loading", "ready" or "error", and body[data-loads] counts
 * finished loads, so scripts and tests can wait for a refresh to land.
 */
"use strict";

(function () {
  const API = "api/v1/stats/";
  const TOKEN_KEY = "thirdring.token";
  const DAY_MS = 86400000;
  const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
  const COLORS = {
    p50: "#2563eb",
    p90: "#d97706",
    attain: "#059669",
    breach: "#dc2626",
    grid: "rgba(0,0,0,0.08)",
  };

  const $ = (id) => document.getElementById(id);
  const charts = {};
  const seen = { brand: new Set(), team: new Set(), source: new Set() };
  let loadSeq = 0;
  let loads = 0;

  class HttpError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // ----- formatting -------------------------------------------------------------------

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
    const s = Math.abs(seconds);
    let out;
    if (s < 60) out = `${Math.round(s)}s`;
    else if (s < 3600) out = `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
    else if (s < 86400) out = `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
    else out = `${Math.floor(s / 86400)}d ${Math.round((s % 86400) / 3600)}h`;
    return seconds < 0 ? `-${out}` : out;
  }

  function fmtPct(ratio) {
    return ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(1)}%`;
  }

  function fmtLabel(iso, interval, tz) {
    const d = new Date(iso);
    const opts = { timeZone: tz };
    if (interval === "hour") Object.assign(opts, { weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    else Object.assign(opts, { weekday: interval === "day" ? "short" : undefined, day: "numeric", month: "short" });
    const text = new Intl.DateTimeFormat("en-GB", opts).format(d);
    return interval === "week" ? `wk ${text}` : text;
  }

  // ----- time zones: a date in the chosen zone -> an instant -----------------------------

  function zoneOffsetMs(ts, tz) {
    const parts = {};
    const f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
    for (const p of f.formatToParts(new Date(ts))) parts[p.type] = p.value;
    const asUtc = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour % 24, +parts.minute, +parts.second);
    return asUtc - Math.floor(ts / 1000) * 1000;
  }

  /** "2026-11-27" at 00:00 in tz, as an ISO instant (UTC). */
  function zonedMidnight(dateStr, tz) {
    const [y, m, d] = dateStr.split("-").map(Number);
    const guess = Date.UTC(y, m - 1, d);
    let at = guess - zoneOffsetMs(guess, tz);
    at = guess - zoneOffsetMs(at, tz); // once more, for a DST change between the two
    return new Date(at).toISOString();
  }

  function todayIn(tz) {
    const parts = {};
    const f = new Intl.DateTimeFormat("en-US", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" });
    for (const p of f.formatToParts(new Date())) parts[p.type] = p.value;
    return `${parts.year}-${parts.month}-${parts.day}`;
  }

  function addDays(dateStr, n) {
    const [y, m, d] = dateStr.split("-").map(Number);
    return new Date(Date.UTC(y, m - 1, d) + n * DAY_MS).toISOString().slice(0, 10);
  }

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (_) {
      return "UTC";
    }
  }

  // ----- messages and the token ----------------------------------------------------------

  function showMessage(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.className = `message ${kind || "error"}`;
    box.hidden = !text;
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function setSignedIn(on) {
    $("sign-out").hidden = !on;
    $("token").placeholder = on ? "signed in; paste another to switch" : "tr_…";
    $("board").classList.toggle("locked", !on);
  }

  async function api(path, params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) qs.set(k, v);
    let res;
    try {
      res = await fetch(`${API}${path}?${qs}`, {
        headers: { Authorization: `Bearer ${token()}`, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new HttpError(0, `the alert service cannot be reached (${err.message})`);
    }
    if (!res.ok) {
      let detail = res.statusText;
      try {
        const body = await res.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (_) { /* not JSON */ }
      throw new HttpError(res.status, detail);
    }
    return res.json();
  }

  // ----- filters --------------------------------------------------------------------------

  function filterValues() {
    const tz = $("f-tz").value.trim() || browserZone();
    new Intl.DateTimeFormat("en-US", { timeZone: tz }); // RangeError for an unknown zone
    const today = todayIn(tz);
    const sinceDay = $("f-since").value || addDays(today, -6);
    const untilDay = $("f-until").value || today;
    const days = Math.round((Date.parse(untilDay) - Date.parse(sinceDay)) / DAY_MS) + 1;
    const interval = $("f-interval").value || (days <= 2 ? "hour" : days <= 92 ? "day" : "week");
    return {
      tz,
      interval,
      since: zonedMidnight(sinceDay, tz),
      until: zonedMidnight(addDays(untilDay, 1), tz), // the until day is included
      brand: $("f-brand").value.trim(),
      team: $("f-team").value.trim(),
      source: $("f-source").value.trim(),
    };
  }

  const FILTER_IDS = { since: "f-since", until: "f-until", brand: "f-brand", team: "f-team", source: "f-source", interval: "f-interval", tz: "f-tz" };

  function filtersFromUrl() {
    const qs = new URLSearchParams(location.search);
    for (const [name, id] of Object.entries(FILTER_IDS)) if (qs.has(name)) $(id).value = qs.get(name);
  }

  function filtersToUrl() {
    const qs = new URLSearchParams();
    for (const [name, id] of Object.entries(FILTER_IDS)) if ($(id).value) qs.set(name, $(id).value);
    const q = qs.toString();
    history.replaceState(null, "", q ? `?${q}` : location.pathname);
  }

  function remember(kind, values) {
    const set = seen[kind];
    let changed = false;
    for (const v of values) if (v !== null && v !== undefined && !set.has(String(v))) { set.add(String(v)); changed = true; }
    if (!changed) return;
    const list = $(`l-${kind}`);
    list.replaceChildren(...[...set].sort().map((v) => Object.assign(document.createElement("option"), { value: v })));
  }

  // ----- charts ---------------------------------------------------------------------------

  function chart(id, config) {
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].update();
      return charts[id];
    }
    charts[id] = new window.Chart($(id), config);
    return charts[id];
  }

  function baseOptions(yTicks, extra) {
    return Object.assign({
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: {
        x: { grid: { color: COLORS.grid } },
        y: { beginAtZero: true, grid: { color: COLORS.grid }, ticks: yTicks },
      },
    }, extra || {});
  }

  function drawTimeseries(ts) {
    const labels = ts.points.map((p) => fmtLabel(p.start, ts.interval, ts.tz));
    chart("c-attainment", {
      type: "line",
      data: {
        labels,
        datasets: [{
          label: "within target %",
          data: ts.points.map((p) => (p.within_target_ratio === null ? null : +(p.within_target_ratio * 100).toFixed(2))),
          borderColor: COLORS.attain,
          backgroundColor: COLORS.attain,
          spanGaps: true,
        }],
      },
      options: baseOptions({ callback: (v) => `${v}%` }, {
        scales: {
          x: { grid: { color: COLORS.grid } },
          y: { min: 0, max: 100, grid: { color: COLORS.grid }, ticks: { callback: (v) => `${v}%` } },
        },
      }),
    });
    // Plotted in minutes (round axis ticks); the tooltip shows the exact duration.
    const pctDataset = (key, label, color) => ({
      label,
      data: ts.points.map((p) => (p.response_seconds[key] === null ? null : p.response_seconds[key] / 60)),
      borderColor: color,
      backgroundColor: color,
      spanGaps: true,
    });
    const options = baseOptions({});
    options.scales.y.title = { display: true, text: "minutes" };
    options.plugins.tooltip = { callbacks: { label: (c) => `${c.dataset.label}: ${fmtDuration(c.parsed.y * 60)}` } };
    chart("c-percentiles", {
      type: "line",
      data: { labels, datasets: [pctDataset("p50", "p50", COLORS.p50), pctDataset("p90", "p90", COLORS.p90)] },
      options,
    });
  }

  function drawBars(id, report, field, none) {
    const groups = report.groups;
    chart(id, {
      type: "bar",
      data: {
        labels: groups.map((g) => (g.key[field] === null ? none : String(g.key[field]))),
        datasets: [{
          label: "breaches",
          data: groups.map((g) => g.breaches),
          backgroundColor: COLORS.breach,
        }, {
          label: "within target",
          data: groups.map((g) => g.within_target),
          backgroundColor: COLORS.attain,
        }],
      },
      options: baseOptions({ precision: 0 }),
    });
  }

  function drawTiles(report, backlog) {
    $("t-cycles").textContent = report.cycles;
    $("t-attain").textContent = fmtPct(report.within_target_ratio);
    $("t-p50").textContent = fmtDuration(report.response_seconds.p50);
    $("t-p90").textContent = fmtDuration(report.response_seconds.p90);
    $("t-breaches").textContent = report.breaches;
    $("t-open").textContent = backlog.open;
  }

  // ----- heat map: 7 rows (Mon-Sun) x 24 hours --------------------------------------------

  function buildHeatmap() {
    const grid = $("heatmap");
    const corner = document.createElement("div");
    corner.className = "hlabel";
    grid.append(corner);
    for (let h = 0; h < 24; h += 1) {
      const l = document.createElement("div");
      l.className = "hlabel";
      l.textContent = h % 3 === 0 ? String(h).padStart(2, "0") : "";
      grid.append(l);
    }
    for (let d = 0; d < 7; d += 1) {
      const l = document.createElement("div");
      l.className = "dlabel";
      l.textContent = DAYS[d];
      grid.append(l);
      for (let h = 0; h < 24; h += 1) {
        const c = document.createElement("div");
        c.className = "cell empty";
        c.dataset.how = String(d * 24 + h);
        c.setAttribute("role", "gridcell");
        grid.append(c);
      }
    }
  }

  function drawHeatmap(report) {
    const byHour = new Map(report.groups.map((g) => [g.key.hour_of_week, g]));
    const p50s = report.groups.map((g) => g.response_seconds.p50).filter((v) => v !== null && v > 0);
    const lo = Math.log(Math.min(...p50s, 1e9));
    const hi = Math.log(Math.max(...p50s, 1));
    for (const cell of $("heatmap").querySelectorAll(".cell")) {
      const how = +cell.dataset.how;
      const g = byHour.get(how);
      const when = `${DAYS[Math.floor(how / 24)]} ${String(how % 24).padStart(2, "0")}:00`;
      const p50 = g ? g.response_seconds.p50 : null;
      if (!g || p50 === null) {
        cell.className = "cell empty";
        cell.style.background = "";
        cell.title = g ? `${when}: ${g.cycles} waiting, none answered` : `${when}: no cases`;
        cell.dataset.p50 = "";
        continue;
      }
      const t = hi > lo ? (Math.log(Math.max(p50, 1)) - lo) / (hi - lo) : 0.5;
      cell.className = "cell";
      cell.style.background = `hsl(${Math.round(140 - 140 * t)}, 70%, ${Math.round(78 - 30 * t)}%)`;
      cell.dataset.p50 = String(p50);
      cell.title = `${when}: p50 ${fmtDuration(p50)}, p90 ${fmtDuration(g.response_seconds.p90)}, ${g.answered}/${g.cycles} answered, ${g.breaches} breaches`;
    }
    $("heat-tz").textContent = `(${report.tz})`;
  }

  // ----- backlog --------------------------------------------------------------------------

  function timeLeftText(c) {
    if (c.stage === "paused") return "paused";
    if (c.time_left_seconds === null) return "no target";
    if (c.time_left_seconds <= 0) return `overdue ${fmtDuration(-c.time_left_seconds)}`;
    return fmtDuration(c.time_left_seconds);
  }

  function drawBacklog(b) {
    const rank = (c) => (c.stage === "paused" ? 2e12 : c.time_left_seconds === null ? 1e12 : c.time_left_seconds);
    const cases = [...b.cases].sort((a, z) => rank(a) - rank(z));
    const rows = cases.map((c) => {
      const tr = document.createElement("tr");
      tr.className = `stage-${c.stage}`;
      tr.dataset.caseId = String(c.case_id);
      const cells = [
        `#${c.case_id}`, c.conversation_id, c.source, c.brand, c.team || "–", c.assignee || "–",
        c.priority, c.stage.replace("_", " "), fmtDuration(c.waiting_seconds), timeLeftText(c),
      ];
      for (const text of cells) tr.append(Object.assign(document.createElement("td"), { textContent: text }));
      tr.lastChild.className = "left";
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.append(Object.assign(document.createElement("td"), { colSpan: 10, textContent: "No open cases.", className: "none" }));
      rows.push(tr);
    }
    $("backlog").tBodies[0].replaceChildren(...rows);
    const s = b.by_stage;
    $("backlog-count").textContent =
      `${b.open} open · ${s.breached} breached · ${s.warned} warned · ${b.by_time_left.under_15m} due within 15m` +
      (b.truncated ? ` · showing ${b.cases.length}` : "");
  }

  // ----- loading --------------------------------------------------------------------------

  function setState(state) {
    document.body.dataset.state = state;
    $("board").setAttribute("aria-busy", state === "loading" ? "true" : "false");
  }

  async function load() {
    if (!token()) {
      setSignedIn(false);
      setState("idle");
      showMessage("Enter a viewer token to see the figures.", "info");
      return;
    }
    let f;
    try {
      f = filterValues();
    } catch (err) {
      showMessage(`Time zone: ${err.message}`);
      setState("error");
      return;
    }
    const seq = ++loadSeq;
    setState("loading");
    const common = { since: f.since, until: f.until, tz: f.tz, brand: f.brand, team: f.team, source: f.source };
    try {
      const [ts, byTeam, bySource, byHour, byBrand, backlog] = await Promise.all([
        api("timeseries", { ...common, interval: f.interval }),
        api("response-times", { ...common, group_by: "team" }),
        api("response-times", { ...common, group_by: "source" }),
        api("response-times", { ...common, group_by: "hour_of_week" }),
        api("response-times", { ...common, group_by: "brand" }),
        api("backlog", { brand: f.brand, team: f.team, source: f.source, limit: 200 }),
      ]);
      if (seq !== loadSeq) return; // a newer load is on its way
      showMessage("");
      setSignedIn(true);
      drawTiles(byTeam, backlog);
      drawTimeseries(ts);
      drawBars("c-team", byTeam, "team", "(no team)");
      drawBars("c-source", bySource, "source", "(none)");
      drawHeatmap(byHour);
      drawBacklog(backlog);
      remember("team", byTeam.groups.map((g) => g.key.team));
      remember("source", bySource.groups.map((g) => g.key.source));
      remember("brand", byBrand.groups.map((g) => g.key.brand));
      remember("team", backlog.cases.map((c) => c.team));
      remember("source", backlog.cases.map((c) => c.source));
      remember("brand", backlog.cases.map((c) => c.brand));
      loads += 1;
      document.body.dataset.loads = String(loads);
      setState("ready");
    } catch (err) {
      if (seq !== loadSeq) return;
      if (err.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        setSignedIn(false);
        showMessage(`Sign-in failed: ${err.message}. Enter a valid viewer token.`);
      } else if (err.status === 403) {
        showMessage(`This token cannot read the stats: ${err.message}.`);
      } else if (err.status === 422) {
        showMessage(`Check the filters: ${err.message}.`);
      } else {
        showMessage(`Could not load the figures: ${err.message}${err.status ? ` (HTTP ${err.status})` : ""}.`);
      }
      setState("error");
    }
  }

  // ----- wiring ---------------------------------------------------------------------------

  function init() {
    buildHeatmap();
    filtersFromUrl();
    if (!$("f-tz").value) $("f-tz").value = browserZone();
    setSignedIn(Boolean(token()));
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("token").value.trim();
      if (!value) {
        showMessage("Enter a viewer token to see the figures.", "info");
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      load();
    });
    $("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      setSignedIn(false);
      showMessage("Signed out.", "info");
      setState("idle");
    });
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      filtersToUrl();
      load();
    });
    $("reset").addEventListener("click", () => {
      for (const id of Object.values(FILTER_IDS)) $(id).value = "";
      $("f-tz").value = browserZone();
      filtersToUrl();
      load();
    });
    load();
  }

  document.body.dataset.loads = "0";
  if (!window.Chart) {
    showMessage("The chart library did not load (dashboard/static/vendor/chart.umd.min.js).");
    setState("error");
    return;
  }
  init();
})();
