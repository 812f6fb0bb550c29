// tblog's web view: live tail, trace view and charts over the SQL API (/v0/sql).
//
// Plain JavaScript, no framework and no build step.  Every value read from the API is
// attacker-controlled log text: it reaches the page through textContent, SVG text nodes
// and attributes only (never parsed as HTML).  The token lives in `state.token` and in this
// tab's sessionStorage; it is sent in the Authorization header only (never in a URL).
"use strict";

(() => {
  const NIL = "00000000-0000-0000-0000-000000000000";
  const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];
  const PAGE = 500; // rows per tail query
  const FIRST = 200; // rows the live view starts with
  const KEEP = 1000; // rows the live view keeps
  const LOOKBACK_US = 10e6; // re-read this far behind the cursor for rows that arrive late
  const POLL_MS = 1000;
  const TOKEN_KEY = "tblog.token";
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    api: "", // "" = this page's own origin (tblog local)
    token: null,
    logs: "tb_logs",
    traces: "traces",
    gen: 0, // bumped whenever the live view restarts: stale polls are ignored
    tail: null,
    timer: null,
    polling: false,
    done: { live: 0, poll: 0, trace: 0, charts: 0, rows: 0 }, // what has finished (tests)
  };
  window.tblogUI = state; // for debugging from the console (and the tests)

  const $ = (id) => document.getElementById(id);

  // -- SQL -------------------------------------------------------------------------

  const ESC = { "\\": "\\\\", "'": "\\'", "\0": "\\0", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                "\b": "\\b", "\f": "\\f" };

  /** A ClickHouse string literal holding exactly `value` (as tblog._sql.string). */
  function str(value) {
    let out = "'";
    for (const ch of String(value)) {
      const code = ch.codePointAt(0);
      if (code >= 0xd800 && code <= 0xdfff) throw new Error("the text is not valid Unicode");
      if (ESC[ch] !== undefined) out += ESC[ch];
      else if (code < 0x20 || code === 0x7f) out += "\\x" + code.toString(16).padStart(2, "0");
      else out += ch;
    }
    return out + "'";
  }

  /** A whole number as SQL text (refuses anything else). */
  function int(value) {
    const n = Number(value);
    if (!Number.isSafeInteger(n)) throw new Error("not a whole number: " + value);
    return String(n);
  }

  /** A datasource name, checked (names are never quoted user text). */
  function ident(name) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error("not a datasource name: " + name);
    return name;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** The rows of `query` (FORMAT JSON is appended). */
  async function sql(query) {
    if (!state.token) throw new ApiError(0, "enter a read token first");
    const url = state.api + "/v0/sql?q=" + encodeURIComponent(query + "\nFORMAT JSON");
    let response;
    try {
      response = await fetch(url, {
        headers: { Authorization: "Bearer " + state.token },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (exc) {
      throw new ApiError(0, "the SQL API is unreachable");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (exc) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.error === "string" ? body.error : response.statusText;
      throw new ApiError(response.status, `the SQL API answered ${response.status}: ${detail}`);
    }
    return (body && body.data) || [];
  }

  const COLUMNS =
    "toString(toUnixTimestamp64Micro(timestamp)) AS ts_us, toString(event_id) AS event_id, " +
    "level, level_no, logger, message, app_name, environment, hostname, trace_id, span_id, " +
    "exception_type, exception_message, exception_stacktrace, extra";

  /** The filter bar as SQL conditions (the same meaning as tblog.query's filters). */
  function filters() {
    const where = [];
    const app = $("f-app").value.trim();
    const level = $("f-level").value;
    const logger = $("f-logger").value.trim();
    const text = $("f-text").value;
    const trace = $("f-trace").value.trim();
    if (app) where.push(`app_name = ${str(app)}`);
    if (level.startsWith("min:")) where.push(`level_no >= ${int(level.slice(4))}`);
    else if (level) where.push(`level = ${str(level)}`);
    if (logger) where.push(`logger = ${str(logger)}`);
    if (text) where.push(`positionCaseInsensitiveUTF8(message, ${str(text)}) > 0`);
    if (trace) where.push(`trace_id = ${str(trace)}`);
    return where;
  }

  const whereSql = (parts) => (parts.length ? "WHERE " + parts.join(" AND ") : "");

  // -- formatting -------------------------------------------------------------------

  function fmtTime(us) {
    const iso = new Date(Math.floor(us / 1000)).toISOString(); // 2026-01-31T10:00:00.123Z
    return iso.slice(0, 10) + " " + iso.slice(11, 23) + String(us % 1000).padStart(3, "0");
  }

  function fmtDur(us) {
    const sign = us < 0 ? "-" : "+";
    const a = Math.abs(us);
    if (a < 1000) return `${sign}${(a / 1000).toFixed(3)} ms`;
    if (a < 1e6) return `${sign}${(a / 1000).toFixed(1)} ms`;
    if (a < 60e6) return `${sign}${(a / 1e6).toFixed(3)} s`;
    return `${sign}${(a / 60e6).toFixed(1)} min`;
  }

  const levelClass = (level) => "lv-" + (LEVELS.includes(level) ? level : "other");

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function setStatus(text, isError) {
    const s = $("status");
    s.textContent = text;
    s.className = isError ? "error" : "";
  }

  function report(exc) {
    setStatus(exc && exc.message ? exc.message : String(exc), true);
  }

  // -- live tail --------------------------------------------------------------------

  const cmp = (a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
  const cursorOf = (row) => [Number(row.ts_us), row.event_id];

  function logRow(row, fresh) {
    const tr = el("tr", undefined, "log-row" + (fresh ? " new" : ""));
    tr.dataset.eventId = row.event_id;
    tr.dataset.us = row.ts_us;
    tr.appendChild(el("td", fmtTime(Number(row.ts_us)), "time"));
    tr.appendChild(el("td", row.level, "lv " + levelClass(row.level)));
    tr.appendChild(el("td", row.app_name, "app"));
    tr.appendChild(el("td", row.logger, "logger"));
    const msg = row.exception_type ? `${row.message}  [${row.exception_type}]` : row.message;
    tr.appendChild(el("td", msg, "msg"));
    const cell = el("td", undefined, "trace");
    if (row.trace_id) {
      const link = el("button", row.trace_id.slice(0, 16), "trace-link");
      link.type = "button";
      link.title = "open trace " + row.trace_id;
      link.dataset.traceId = row.trace_id;
      link.addEventListener("click", (ev) => {
        ev.stopPropagation();
        openTrace(row.trace_id);
      });
      cell.appendChild(link);
    }
    tr.appendChild(cell);
    tr.addEventListener("click", () => toggleDetails(tr, row));
    return tr;
  }

  function toggleDetails(tr, row) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("details")) {
      next.remove();
      return;
    }
    const lines = [
      `event_id: ${row.event_id}`,
      `environment: ${row.environment}   hostname: ${row.hostname}`,
      `trace_id: ${row.trace_id}   span_id: ${row.span_id}`,
      `message: ${row.message}`,
    ];
    if (row.exception_type) {
      lines.push(`exception: ${row.exception_type}: ${row.exception_message}`);
      lines.push(row.exception_stacktrace);
    }
    lines.push(`extra: ${row.extra}`);
    const details = el("tr", undefined, "details");
    const td = el("td", lines.join("\n"));
    td.colSpan = 6;
    details.appendChild(td);
    tr.after(details);
  }

  /** Put `rows` into the table in (timestamp, event_id) order, newest first. */
  function insertRows(rows, fresh) {
    const body = $("logs").tBodies[0];
    for (const row of rows) {
      const tr = logRow(row, fresh);
      const key = cursorOf(row);
      let before = null;
      const top = body.rows[0];
      if (top && cmp([Number(top.dataset.us), top.dataset.eventId], key) < 0) {
        body.insertBefore(tr, top); // the usual case: newer than every row shown
        continue;
      }
      for (const other of body.rows) {
        if (other.classList.contains("details")) continue;
        if (cmp([Number(other.dataset.us), other.dataset.eventId], key) < 0) {
          before = other;
          break;
        }
      }
      body.insertBefore(tr, before);
    }
    const logRows = body.querySelectorAll("tr.log-row");
    for (let i = KEEP; i < logRows.length; i++) {
      const extra = logRows[i].nextElementSibling;
      if (extra && extra.classList.contains("details")) extra.remove();
      logRows[i].remove();
    }
    $("live-count").textContent = `${Math.min(logRows.length, KEEP)} rows shown`;
  }

  /** Start the live view over: the newest rows, then a cursor that follows new ones. */
  async function startLive() {
    const gen = ++state.gen;
    stopPolling();
    $("logs").tBodies[0].replaceChildren();
    $("live-count").textContent = "";
    const where = filters();
    const ds = ident(state.logs);
    const rows = await sql(
      `SELECT ${COLUMNS} FROM ${ds} ${whereSql(where)} ` +
        `ORDER BY timestamp DESC, toString(event_id) DESC LIMIT ${FIRST}`,
    );
    if (gen !== state.gen) return;
    // Rows older than the oldest shown are history, not news: the look-back stops there.
    const floor = rows.length === FIRST ? cursorOf(rows[rows.length - 1]) : [0, NIL];
    const tail = { where, ds, floor, cursor: floor, seen: new Map() };
    for (const row of rows) {
      tail.seen.set(row.event_id, Number(row.ts_us));
      if (cmp(cursorOf(row), tail.cursor) > 0) tail.cursor = cursorOf(row);
    }
    state.tail = tail;
    insertRows(rows.slice().reverse(), false);
    setStatus(`${rows.length} rows` + (rows.length === FIRST ? " (the newest)" : ""));
    state.done.live++;
    schedulePoll(gen);
  }

  /** Rows after the cursor (less the look-back), each shown once. */
  async function poll(gen) {
    const tail = state.tail;
    let after = [tail.cursor[0] - LOOKBACK_US, NIL];
    if (cmp(after, tail.floor) < 0) after = tail.floor;
    const found = [];
    for (;;) {
      const rows = await sql(
        `SELECT ${COLUMNS} FROM ${tail.ds} ${whereSql([
          ...tail.where,
          `(timestamp, toString(event_id)) > (fromUnixTimestamp64Micro(${int(after[0])}), ` +
            `${str(after[1])})`,
        ])} ORDER BY timestamp, toString(event_id) LIMIT ${PAGE}`,
      );
      if (gen !== state.gen) return;
      for (const row of rows) {
        if (tail.seen.has(row.event_id)) continue;
        tail.seen.set(row.event_id, Number(row.ts_us));
        found.push(row);
        if (cmp(cursorOf(row), tail.cursor) > 0) tail.cursor = cursorOf(row);
      }
      if (rows.length < PAGE) break;
      after = cursorOf(rows[rows.length - 1]);
    }
    const horizon = tail.cursor[0] - LOOKBACK_US;
    for (const [id, us] of tail.seen) if (us < horizon) tail.seen.delete(id);
    if (found.length) insertRows(found, true);
    state.done.rows += found.length;
    state.done.poll++;
  }

  function schedulePoll(gen) {
    if (!$("follow").checked || gen !== state.gen) return;
    state.timer = setTimeout(async () => {
      state.timer = null;
      if (gen !== state.gen || !$("follow").checked) return;
      state.polling = true;
      try {
        await poll(gen);
      } catch (exc) {
        if (gen === state.gen) report(exc);
      } finally {
        state.polling = false;
      }
      schedulePoll(gen);
    }, POLL_MS);
  }

  function stopPolling() {
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = null;
  }

  // -- trace view -------------------------------------------------------------------

  async function openTrace(traceId) {
    showTab("trace");
    $("trace-id").value = traceId;
    try {
      await loadTrace(traceId.trim());
    } catch (exc) {
      report(exc);
    }
  }

  async function loadTrace(traceId) {
    const body = $("trace").tBodies[0];
    const note = $("trace-note");
    body.replaceChildren();
    note.textContent = "";
    note.className = "note";
    $("trace-summary").textContent = "";
    if (!traceId) return;
    const logs = await sql(
      `SELECT ${COLUMNS} FROM ${ident(state.logs)} WHERE trace_id = ${str(traceId)} ` +
        "ORDER BY timestamp, toString(event_id)",
    );
    let spans = [];
    if (state.traces) {
      try {
        spans = await sql(
          "SELECT toString(toUnixTimestamp64Micro(timestamp)) AS ts_us, span_id, " +
            "parent_span_id, model, query, tokens_prompt, tokens_completion, tokens_total, " +
            "latency_ms, ttfb_ms, status, status_text " +
            `FROM ${ident(state.traces)} WHERE trace_id = ${str(traceId)} ` +
            "ORDER BY timestamp, span_id",
        );
      } catch (exc) {
        note.textContent = `LLM calls not shown: ${exc.message}`;
      }
    }
    const items = [
      ...logs.map((r) => ({ kind: "log", us: Number(r.ts_us), key: r.event_id, row: r })),
      ...spans.map((r) => ({ kind: "llm", us: Number(r.ts_us), key: r.span_id, row: r })),
    ];
    items.sort((a, b) => a.us - b.us || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (!items.length) {
      note.textContent = (note.textContent ? note.textContent + "; " : "") +
        "no rows with this trace id";
      state.done.trace++;
      return;
    }
    const start = items[0].us;
    let end = start;
    let tokens = 0;
    for (const it of items) {
      const latency = it.kind === "llm" ? Number(it.row.latency_ms) * 1000 : 0;
      end = Math.max(end, it.us + latency);
      if (it.kind === "llm") tokens += Number(it.row.tokens_total || 0);
    }
    const total = Math.max(end - start, 1);
    let prev = start;
    for (const it of items) {
      const r = it.row;
      const tr = el("tr", undefined, "kind-" + it.kind);
      tr.dataset.us = String(it.us);
      tr.dataset.kind = it.kind;
      tr.appendChild(el("td", fmtTime(it.us), "time"));
      const offset = el("td", fmtDur(it.us - start), "num offset");
      offset.dataset.us = String(it.us - start);
      tr.appendChild(offset);
      const delta = el("td", fmtDur(it.us - prev), "num delta");
      delta.dataset.us = String(it.us - prev);
      tr.appendChild(delta);
      prev = it.us;
      tr.appendChild(el("td", it.kind === "llm" ? "LLM call" : "log"));
      if (it.kind === "log") {
        tr.appendChild(el("td", r.level, "lv " + levelClass(r.level)));
        tr.appendChild(el("td", `${r.logger}: ${r.message}`, "msg"));
        tr.appendChild(el("td", ""));
        tr.appendChild(el("td", ""));
      } else {
        tr.appendChild(el("td", r.model || "", "model"));
        const status = r.status && Number(r.status) >= 400 ? `  [${r.status} ${r.status_text}]` : "";
        tr.appendChild(el("td", r.query + status, "msg"));
        const tok = r.tokens_total === null || r.tokens_total === undefined ? "" :
          `${r.tokens_total} (${r.tokens_prompt ?? "?"} in, ${r.tokens_completion ?? "?"} out)`;
        tr.appendChild(el("td", tok, "num tokens"));
        const lat = `${r.latency_ms} ms` + (r.ttfb_ms !== null && r.ttfb_ms !== undefined ?
          ` (first byte ${r.ttfb_ms} ms)` : "");
        tr.appendChild(el("td", lat, "num latency"));
      }
      const cell = el("td");
      const width = 160;
      const svg = svgEl("svg", { width, height: 12, class: "timeline" });
      const x = ((it.us - start) / total) * width;
      const w = it.kind === "llm" ? Math.max(2, ((Number(r.latency_ms) * 1000) / total) * width) : 2;
      svg.appendChild(svgEl("rect", { x: Math.min(x, width - 2), y: 2, width: w, height: 8,
        class: it.kind === "llm" ? "span-bar" : "log-tick" }));
      cell.appendChild(svg);
      tr.appendChild(cell);
      body.appendChild(tr);
    }
    $("trace-summary").textContent =
      `${logs.length} log rows, ${spans.length} LLM calls over ${fmtDur(end - start).slice(1)}` +
      (spans.length ? `, ${tokens} tokens` : "");
    setStatus(`trace ${traceId}`);
    state.done.trace++;
  }

  // -- charts -----------------------------------------------------------------------

  function autoStep(seconds) {
    const steps = [1, 5, 10, 30, 60, 300, 900, 1800, 3600, 10800, 21600, 43200, 86400];
    return steps.find((s) => seconds / s <= 60) || 86400 * Math.ceil(seconds / 86400 / 60);
  }

  function parseUtc(text) {
    const t = text.trim().replace(" ", "T");
    const ms = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(t) ? t : t + "Z");
    if (Number.isNaN(ms)) throw new Error(`not a time: ${text} (use 2026-01-31 10:00:00, UTC)`);
    return ms;
  }

  async function drawCharts() {
    const range = $("c-range").value;
    let fromS;
    let toS;
    if (range === "custom") {
      fromS = parseUtc($("c-from").value) / 1000;
      toS = parseUtc($("c-to").value) / 1000;
      if (!(toS > fromS)) throw new Error("the range must end after it starts");
    } else {
      const now = await sql("SELECT toString(toUnixTimestamp64Micro(now64(6))) AS now");
      toS = Number(now[0].now) / 1e6;
      fromS = toS - Number(range);
    }
    const stepS = $("c-step").value === "auto" ? autoStep(toS - fromS) : Number($("c-step").value);
    const step = stepS * 1e6;
    // Whole intervals, aligned on the UTC epoch: a relative range ends with the interval
    // that holds "now" and spans just as many intervals as it asks for.
    const end = Math.ceil((toS * 1e6) / step) * step;
    const start = range === "custom" ? Math.floor((fromS * 1e6) / step) * step :
      end - Math.ceil(Number(range) / stepS) * step;
    const count = Math.round((end - start) / step);
    if (count > 1000) throw new Error(`${count} intervals: choose a longer interval`);
    const ds = ident(state.logs);
    const where = whereSql([
      ...filters(),
      `timestamp >= fromUnixTimestamp64Micro(${int(start)})`,
      `timestamp < fromUnixTimestamp64Micro(${int(end)})`,
    ]);
    const [buckets, loggers, apps, totals] = await Promise.all([
      sql(
        `SELECT toString(intDiv(toUnixTimestamp64Micro(timestamp), ${int(step)}) * ${int(step)}) ` +
          `AS b, level, count() AS n, countIf(level_no >= 40) AS e FROM ${ds} ${where} ` +
          "GROUP BY b, level ORDER BY b, level",
      ),
      sql(`SELECT logger AS k, count() AS n FROM ${ds} ${where} GROUP BY k ORDER BY n DESC, k LIMIT 10`),
      sql(`SELECT app_name AS k, count() AS n FROM ${ds} ${where} GROUP BY k ORDER BY n DESC, k LIMIT 10`),
      sql(`SELECT count() AS n, countIf(level_no >= 40) AS e FROM ${ds} ${where}`),
    ]);
    // Every interval of the range, the empty ones included (filled here: the API sends
    // the intervals that hold rows).
    const series = [];
    const byStart = new Map();
    for (let i = 0; i < count; i++) {
      const b = { start: start + i * step, total: 0, errors: 0, levels: new Map() };
      series.push(b);
      byStart.set(b.start, b);
    }
    for (const row of buckets) {
      const b = byStart.get(Number(row.b));
      if (!b) continue;
      const n = Number(row.n);
      b.total += n;
      b.errors += Number(row.e);
      b.levels.set(row.level, (b.levels.get(row.level) || 0) + n);
    }
    drawLevels(series, stepS);
    drawErrorRate(series);
    drawTop($("top-loggers"), loggers);
    drawTop($("top-apps"), apps);
    const total = Number(totals[0].n);
    const errors = Number(totals[0].e);
    const rate = total ? ((100 * errors) / total).toFixed(1) : "0.0";
    $("chart-summary").textContent =
      `${total} events, ${errors} errors (${rate}%) in ${count} intervals of ${stepS} s ` +
      `from ${fmtTime(start).slice(0, 19)} to ${fmtTime(end).slice(0, 19)} UTC`;
    setStatus("charts drawn");
    state.done.charts++;
  }

  const W = 900;
  const PAD_L = 44;
  const PAD_B = 20;

  function timeAxis(svg, series, height, stepS) {
    const plotW = W - PAD_L - 8;
    const every = Math.max(1, Math.ceil(series.length / 8));
    series.forEach((b, i) => {
      if (i % every) return;
      const t = fmtTime(b.start);
      const label = stepS >= 86400 ? t.slice(0, 10) : stepS < 60 ? t.slice(11, 19) : t.slice(11, 16);
      svg.appendChild(svgEl("text", { x: PAD_L + (i * plotW) / series.length, y: height - 5 }, label));
    });
    svg.appendChild(svgEl("line", { x1: PAD_L, x2: W - 8, y1: height - PAD_B, y2: height - PAD_B,
      class: "axis" }));
  }

  function drawLevels(series, stepS) {
    const svg = $("chart-levels");
    const height = 200;
    svg.replaceChildren();
    svg.setAttribute("width", W);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${W} ${height}`);
    const max = Math.max(1, ...series.map((b) => b.total));
    const plotW = W - PAD_L - 8;
    const plotH = height - PAD_B - 10;
    const bw = plotW / series.length;
    svg.appendChild(svgEl("text", { x: 4, y: 14 }, String(max)));
    svg.appendChild(svgEl("text", { x: 4, y: height - PAD_B }, "0"));
    const seen = new Set();
    series.forEach((b, i) => {
      const g = svgEl("g", { class: "bucket", "data-start": b.start, "data-total": b.total });
      const names = [...LEVELS, ...[...b.levels.keys()].filter((l) => !LEVELS.includes(l)).sort()];
      let y = height - PAD_B;
      const parts = [];
      for (const level of names) {
        const n = b.levels.get(level) || 0;
        if (!n) continue;
        seen.add(levelClass(level));
        const h = (n / max) * plotH;
        y -= h;
        g.appendChild(svgEl("rect", { x: PAD_L + i * bw + 0.5, y, width: Math.max(1, bw - 1),
          height: h, class: levelClass(level), "data-level": level, "data-n": n }));
        parts.push(`${level} ${n}`);
      }
      g.appendChild(svgEl("title", {}, `${fmtTime(b.start).slice(0, 19)}: ${b.total}` +
        (parts.length ? ` (${parts.join(", ")})` : "")));
      svg.appendChild(g);
    });
    timeAxis(svg, series, height, stepS);
    const legend = $("legend");
    legend.replaceChildren();
    for (const level of [...LEVELS, "other"]) {
      if (seen.has("lv-" + level)) legend.appendChild(el("span", level, "lv-" + level));
    }
  }

  function drawErrorRate(series) {
    const svg = $("chart-errors");
    const height = 110;
    svg.replaceChildren();
    svg.setAttribute("width", W);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${W} ${height}`);
    const plotW = W - PAD_L - 8;
    const plotH = height - PAD_B - 10;
    const bw = plotW / series.length;
    const points = series.map((b, i) => {
      const rate = b.total ? b.errors / b.total : 0;
      return `${(PAD_L + (i + 0.5) * bw).toFixed(1)},${(height - PAD_B - rate * plotH).toFixed(1)}`;
    });
    svg.appendChild(svgEl("text", { x: 4, y: 14 }, "100%"));
    svg.appendChild(svgEl("text", { x: 4, y: height - PAD_B }, "0%"));
    svg.appendChild(svgEl("polyline", { points: points.join(" "), class: "rate" }));
    series.forEach((b, i) => {
      const rate = b.total ? b.errors / b.total : 0;
      const c = svgEl("circle", { cx: PAD_L + (i + 0.5) * bw, cy: height - PAD_B - rate * plotH,
        r: 2, class: "rate-point", "data-rate": rate.toFixed(4) });
      c.appendChild(svgEl("title", {}, `${fmtTime(b.start).slice(0, 19)}: ` +
        `${b.errors} of ${b.total} (${(rate * 100).toFixed(1)}%)`));
      svg.appendChild(c);
    });
    svg.appendChild(svgEl("line", { x1: PAD_L, x2: W - 8, y1: height - PAD_B, y2: height - PAD_B,
      class: "axis" }));
  }

  function drawTop(svg, rows) {
    const width = 430;
    const rowH = 18;
    const height = Math.max(1, rows.length) * rowH + 6;
    svg.replaceChildren();
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    if (!rows.length) {
      svg.appendChild(svgEl("text", { x: 6, y: 15 }, "no events"));
      return;
    }
    const max = Math.max(...rows.map((r) => Number(r.n)));
    rows.forEach((r, i) => {
      const g = svgEl("g", { class: "top", "data-n": Number(r.n) });
      const y = 3 + i * rowH;
      g.appendChild(svgEl("rect", { x: 170, y: y + 2, height: rowH - 5,
        width: Math.max(1, (Number(r.n) / max) * 200), class: "topbar" }));
      const name = String(r.k);
      g.appendChild(svgEl("text", { x: 6, y: y + 13, class: "label" },
        name.length > 26 ? name.slice(0, 25) + "…" : name || "(empty)"));
      g.appendChild(svgEl("text", { x: 376, y: y + 13 }, String(r.n)));
      g.appendChild(svgEl("title", {}, `${name}: ${r.n}`));
      svg.appendChild(g);
    });
  }

  // -- page -------------------------------------------------------------------------

  function showTab(name) {
    for (const b of document.querySelectorAll("nav button")) {
      b.classList.toggle("active", b.dataset.tab === name);
    }
    for (const tab of ["live", "trace", "charts"]) $("tab-" + tab).hidden = tab !== name;
  }

  function run(promise) {
    promise.catch(report);
  }

  async function connect() {
    state.logs = ident($("ds-logs").value.trim() || "tb_logs");
    state.traces = $("ds-traces").value.trim() ? ident($("ds-traces").value.trim()) : "";
    $("forget").hidden = !state.token;
    if (!state.token) {
      setStatus("enter a read token (DATASOURCES:READ on the logs datasource)", true);
      return;
    }
    setStatus("loading…");
    await startLive();
    if (!$("tab-charts").hidden) await drawCharts();
  }

  /** Read /ui/config (the API to read through, datasources, a token `tblog ui` was given). */
  async function loadConfig() {
    let config = {};
    try {
      const r = await fetch("/ui/config", { cache: "no-store", credentials: "omit" });
      if (r.ok) config = await r.json();
    } catch (exc) {
      config = {};
    }
    state.api = typeof config.api === "string" ? config.api.replace(/\/+$/, "") : "";
    $("api-label").textContent = state.api || location.origin;
    if (typeof config.logs === "string") $("ds-logs").value = config.logs;
    if (typeof config.traces === "string") $("ds-traces").value = config.traces;
    if (state.token) return; // typed while the config was on its way: the typed one wins
    if (typeof config.token === "string" && config.token) {
      state.token = config.token;
      sessionStorage.setItem(TOKEN_KEY, state.token);
    } else {
      state.token = sessionStorage.getItem(TOKEN_KEY);
    }
  }

  /**
   * Attach every control at once, before the config arrives: a form without its listener
   * would submit natively (a reload that loses what was typed).  Each action waits for the
   * config (`ready`), since the API it reads through comes from it.
   */
  function wire(ready) {
    const after = (action) => run(ready.then(action));
    $("connect").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const typed = $("token").value.trim();
      $("token").value = ""; // the token stays in memory and this tab's session only
      if (typed) {
        state.token = typed;
        sessionStorage.setItem(TOKEN_KEY, typed);
      }
      after(connect);
    });
    $("forget").addEventListener("click", () => {
      state.gen++;
      stopPolling();
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      $("forget").hidden = true;
      setStatus("token forgotten");
    });
    $("filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      after(startLive);
      if (!$("tab-charts").hidden) after(drawCharts);
      const trace = $("f-trace").value.trim();
      if (trace && !$("tab-trace").hidden) after(() => openTrace(trace));
    });
    $("follow").addEventListener("change", () => {
      if ($("follow").checked) after(startLive);
      else stopPolling();
    });
    $("trace-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const trace = $("trace-id").value;
      after(() => openTrace(trace));
    });
    $("chart-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      after(drawCharts);
    });
    $("c-range").addEventListener("change", () => {
      const custom = $("c-range").value === "custom";
      $("c-from").hidden = !custom;
      $("c-to").hidden = !custom;
    });
    for (const b of document.querySelectorAll("nav button")) {
      b.addEventListener("click", () => {
        showTab(b.dataset.tab);
        if (b.dataset.tab === "charts" && state.token) after(drawCharts);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const ready = loadConfig();
    wire(ready);
    run(ready.then(connect));
  });
})();
