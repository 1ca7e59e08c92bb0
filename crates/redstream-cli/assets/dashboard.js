// The redstream dashboard: renders the snapshots the server pushes over /ws.
// Plain browser JavaScript, no dependencies. Text from the server is only ever set with
// textContent or attributes, never parsed as HTML.
(() => {
  'use strict';

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const HISTORY_MS = 60 * 60 * 1000;
  const CHART_SERIES = 6;
  const SPARK_POINTS = 30;
  const WRITES_OFF = 'Write actions are disabled: start the dashboard with --allow-writes';

  const DLQ_PAGE = 25;
  const ENTRY_PAGE = 25;
  const PENDING_PAGE = 50;

  const token = new URLSearchParams(location.search).get('token');
  const $ = (id) => document.getElementById(id);

  const state = {
    snapshot: null,
    lastTime: null,
    history: new Map(),  // stream -> [{ t, rate, ack, lag }], from the server's samples
    exact: new Map(),    // stream -> whether its rates come from entries-added
    seenStreams: null,   // Set of stream names rendered before (null before the first render)
    seenDead: null,
    ws: null,
    retry: 0,
    // The dead-letter table: a page of GET /api/dlq/page, its cursor and the ones before it.
    dlq: { sig: null, seq: 0, cursor: null, stack: [], filters: {}, page: null },
    // The stream page, when one is open.
    page: null,
    // The id of the dead letter opened whole, when its view is shown.
    letter: null,
  };

  // ---------- formatting ----------
  const nf = new Intl.NumberFormat('en-US');
  const num = (n) => (n == null ? '–' : nf.format(n));
  function bytes(b) {
    if (b == null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i += 1; }
    return `${b < 10 && i > 0 && !Number.isInteger(b) ? b.toFixed(1) : Math.round(b)} ${units[i]}`;
  }
  function duration(secs) {
    if (secs == null) return '–';
    if (secs < 1) return `${Math.round(secs * 1000)} ms`;
    if (secs < 60) return `${secs.toFixed(1)} s`;
    const m = Math.floor(secs / 60);
    if (m < 60) return `${m}m ${Math.floor(secs % 60)}s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h}h ${m % 60}m`;
    return `${Math.floor(h / 24)}d ${h % 24}h`;
  }
  function rate(r) {
    if (r == null) return '–';
    if (r === 0) return '0';
    if (r < 10) return r.toFixed(2);
    if (r < 100) return r.toFixed(1);
    return nf.format(Math.round(r));
  }
  // A hit ratio (0 to 1) as a percentage; '–' when there was no lookup.
  function ratio(r) {
    if (r == null) return '–';
    const p = r * 100;
    return `${p === 100 || p === 0 ? p : p.toFixed(1)} %`;
  }
  function lookups(n) {
    if (n.keyspace_hits == null || n.keyspace_misses == null) return 'The node does not report its key lookups';
    if (n.hit_ratio == null) return 'No key lookups yet';
    return `${num(n.keyspace_hits)} hits, ${num(n.keyspace_misses)} misses since the node started`;
  }
  function clock(ms) {
    return ms == null ? '–' : new Date(ms).toLocaleTimeString([], { hour12: false });
  }
  function when(ms) {
    if (ms == null) return '–';
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    return today ? clock(ms) : d.toLocaleString([], { hour12: false });
  }

  // A message as a sentence: ends with a full stop (or its own punctuation).
  function sentence(text) {
    const t = String(text || '').trim();
    return /[.!?…]$/.test(t) ? t : `${t}.`;
  }

  // ---------- DOM helpers ----------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const child of children) {
      if (child == null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }
  function cell(text, cls, title) {
    return el('td', { class: cls, title }, text);
  }
  // Makes the rows of `body` one per item, in order. Rows whose data did not change are kept
  // where they are (not re-inserted), so focus, hover and a running highlight survive a
  // refresh; rows for keys not seen before are highlighted once.
  function syncRows(body, items, key, build, seen) {
    const old = new Map();
    for (const row of body.rows) old.set(row.dataset.key, row);
    const wanted = items.map((item) => {
      const k = key(item);
      const sig = JSON.stringify(item);
      const existing = old.get(k);
      if (existing && existing.dataset.sig === sig) return existing;
      const row = build(item);
      row.dataset.key = k;
      row.dataset.sig = sig;
      if (seen && !seen.has(k)) {
        row.classList.add('fresh');
        row.addEventListener('animationend', () => row.classList.remove('fresh'), { once: true });
      }
      return row;
    });
    const keep = new Set(wanted);
    for (const row of [...body.rows]) if (!keep.has(row)) row.remove();
    wanted.forEach((row, i) => {
      if (body.rows[i] !== row) body.insertBefore(row, body.rows[i] || null);
    });
    return new Set(items.map(key));
  }

  // ---------- throughput ----------
  // The server keeps the last hour (GET /api/throughput), sampled from Redis's own counters;
  // each snapshot carries its new sample. Points: { t, rate, ack, lag }.
  function applySample(sample) {
    const t = sample.t;
    for (const [name, p] of Object.entries(sample.streams)) {
      const h = state.history.get(name) || [];
      h.push({ t, rate: p.rate, ack: p.ack_rate, lag: p.lag });
      while (h.length && h[0].t < t - HISTORY_MS) h.shift();
      state.history.set(name, h);
      state.exact.set(name, p.exact);
    }
    // A deleted stream leaves the charts.
    for (const name of [...state.history.keys()]) if (!(name in sample.streams)) state.history.delete(name);
    state.lastTime = t;
  }
  function updateRates(snap) {
    const sample = snap.throughput;
    if (sample && (state.lastTime == null || sample.t > state.lastTime)) applySample(sample);
  }
  async function loadHistory() {
    let view;
    try { view = await getJson('/api/throughput'); } catch (_) { return; /* the snapshots still feed it */ }
    const history = new Map();
    for (const [name, series] of Object.entries(view.streams)) {
      const h = [];
      view.t.forEach((t, i) => {
        if (series.rate[i] != null) h.push({ t, rate: series.rate[i], ack: series.ack_rate[i], lag: series.lag[i] });
      });
      if (h.length) history.set(name, h);
      state.exact.set(name, series.exact);
    }
    const last = view.t.length ? view.t[view.t.length - 1] : null;
    // Samples the snapshots brought while the request was out go after the history's last one
    // (a snapshot can beat the reply: dropping the history then would lose the hour).
    for (const [name, h] of state.history) {
      const newer = h.filter((p) => last == null || p.t > last);
      if (newer.length) history.set(name, (history.get(name) || []).concat(newer));
    }
    state.history = history;
    if (last != null && (state.lastTime == null || last > state.lastTime)) state.lastTime = last;
    if (state.snapshot) { renderStreams(state.snapshot); if (!state.page) drawCharts(); }
    $('throughput-chart').dataset.history = 'loaded';
  }
  const currentRate = (name) => {
    const h = state.history.get(name);
    return h && h.length ? h[h.length - 1].rate : null;
  };

  function sparkline(name) {
    const h = (state.history.get(name) || []).slice(-SPARK_POINTS);
    const box = svg('svg', { class: 'spark', viewBox: '0 0 96 24', 'aria-hidden': 'true', focusable: 'false' });
    if (h.length < 2) return box;
    const max = Math.max(...h.map((p) => p.rate), 1e-9);
    const step = 96 / (SPARK_POINTS - 1);
    const offset = (SPARK_POINTS - h.length) * step;
    const points = h.map((p, i) => `${(offset + i * step).toFixed(1)},${(22 - (p.rate / max) * 20).toFixed(1)}`);
    box.append(svg('polyline', { points: points.join(' ') }));
    return box;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // Labels of the time axis: "−10 min", "−30 s", "now".
  function ago(ms) {
    if (ms <= 0) return 'now';
    if (ms >= 60000) return `−${Math.round((ms / 60000) * 10) / 10} min`;
    return `−${Math.round(ms / 1000)} s`;
  }
  function axisLabel(v) {
    return Number.isInteger(v) ? nf.format(v) : String(Number(v.toFixed(2)));
  }

  // Draws `series` ([{ label, points: [{ t, v }], last, peak }]) in the SVG `chart`, with
  // their legend and a text summary for screen readers.
  function drawLines({ chart, legend, summary, series, unit, span, empty }) {
    const width = Math.max(300, Math.round(chart.clientWidth || 800));
    const height = Math.round(chart.clientHeight || 220);
    const pad = { l: 52, r: 14, t: 12, b: 26 };
    chart.setAttribute('viewBox', `0 0 ${width} ${height}`);
    chart.replaceChildren();
    const now = state.lastTime;
    const plotW = width - pad.l - pad.r;
    const plotH = height - pad.t - pad.b;
    const max = niceMax(Math.max(0, ...series.map((s) => s.peak)));
    const x = (t) => pad.l + plotW * (1 - (now - t) / span);
    const y = (v) => pad.t + plotH * (1 - v / max);
    for (const frac of [0, 0.5, 1]) {
      const v = max * frac;
      chart.append(svg('line', { class: 'grid', x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v) }));
      const label = svg('text', { class: 'axis', x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end' });
      label.textContent = axisLabel(v);
      chart.append(label);
    }
    for (const [frac, anchor] of [[1, 'start'], [0.5, 'middle'], [0, 'end']]) {
      const label = svg('text', { class: 'axis', x: now == null ? pad.l : x(now - span * frac), y: height - 8, 'text-anchor': anchor });
      label.textContent = ago(span * frac);
      chart.append(label);
    }
    legend.replaceChildren();
    if (!series.length) {
      const msg = svg('text', { class: 'nodata', x: width / 2, y: pad.t + plotH / 2, 'text-anchor': 'middle' });
      msg.textContent = empty;
      chart.append(msg);
      summary.textContent = empty;
      return;
    }
    series.forEach((s, i) => {
      const points = s.points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
      chart.append(svg('polyline', { class: `series c${i}`, points }));
      const last = s.points[s.points.length - 1];
      chart.append(svg('circle', { class: `dot c${i}`, cx: x(last.t).toFixed(1), cy: y(last.v).toFixed(1), r: 3 }));
      legend.append(el('li', {}, el('span', { class: `swatch c${i}`, 'aria-hidden': 'true' }), `${s.label} `,
        el('span', { class: 'muted' }, `${unit.short(s.last)}`)));
    });
    summary.textContent = `${series.map((s) => `${s.label}: ${unit.long(s.last)} now, peak ${unit.long(s.peak)}`).join('; ')}.`;
  }

  // Per stream, the points of `field` that are not null, as { t, v }.
  function seriesOf(field) {
    return [...state.history.entries()].map(([name, h]) => {
      const points = h.filter((p) => p[field] != null).map((p) => ({ t: p.t, v: p[field] }));
      return { name, label: shortName(name), points, peak: Math.max(0, ...points.map((p) => p.v)), last: points.length ? points[points.length - 1].v : 0 };
    });
  }
  const busiest = (list) => list.filter((s) => s.points.length && s.peak > 0)
    .sort((a, b) => b.peak - a.peak || a.name.localeCompare(b.name)).slice(0, CHART_SERIES);
  // The sum of `field` over the streams `keep` accepts, per sample time.
  function total(field, keep, label) {
    const sums = new Map();
    for (const [name, h] of state.history) {
      if (!keep(name)) continue;
      for (const p of h) if (p[field] != null) sums.set(p.t, (sums.get(p.t) || 0) + p[field]);
    }
    const points = [...sums.entries()].sort((a, b) => a[0] - b[0]).map(([t, v]) => ({ t, v }));
    return { name: label, label, points, peak: Math.max(0, ...points.map((p) => p.v)), last: points.length ? points[points.length - 1].v : 0 };
  }

  function drawCharts() {
    const now = state.lastTime;
    const times = new Set();
    for (const h of state.history.values()) for (const p of h) times.add(p.t);
    $('throughput-chart').dataset.samples = String(times.size);
    // The time axis spans the history there is, from one minute up to an hour.
    let oldest = now;
    for (const h of state.history.values()) if (h.length && h[0].t < oldest) oldest = h[0].t;
    const span = now == null ? HISTORY_MS : Math.min(HISTORY_MS, Math.max(60000, now - oldest));
    const last = ago(span).slice(1);
    const inexact = [...state.history.keys()].some((name) => state.exact.get(name) === false);
    $('throughput-span').textContent = `events per second, last ${last}${inexact ? ' (from lengths where Redis has no entries-added: a lower bound)' : ''}`;
    const perSecond = { short: (v) => `${rate(v)}/s`, long: (v) => `${rate(v)} per second` };
    const waiting = state.lastTime == null ? 'Waiting for a second snapshot…' : null;
    drawLines({
      chart: $('throughput-chart'), legend: $('throughput-legend'), summary: $('throughput-summary'),
      series: busiest(seriesOf('rate')), unit: perSecond, span,
      empty: waiting || `No new events in the last ${last}`,
    });
    const dlq = state.snapshot ? state.snapshot.dlq.stream : null;
    const flow = [total('ack', (n) => n !== dlq, 'acknowledged'), total('rate', (n) => n === dlq, 'dead-lettered')]
      .filter((s) => s.points.length && s.peak > 0);
    drawLines({
      chart: $('flow-chart'), legend: $('flow-legend'), summary: $('flow-summary'),
      series: flow, unit: perSecond, span,
      empty: waiting || 'Nothing acknowledged or dead-lettered',
    });
    drawLines({
      chart: $('lag-chart'), legend: $('lag-legend'), summary: $('lag-summary'),
      series: busiest(seriesOf('lag')), unit: { short: (v) => num(v), long: (v) => `${num(v)} entries behind` }, span,
      empty: waiting || 'No group is behind',
    });
  }

  function shortName(name) {
    const snap = state.snapshot;
    const stream = snap && snap.streams.find((s) => s.name === name);
    return stream ? stream.short_name : name;
  }

  // ---------- rendering ----------
  function render(snap) {
    state.snapshot = snap;
    updateRates(snap);
    $('alert').hidden = true;
    $('main').classList.remove('stale');
    setConnection('live', 'Live');
    const also = snap.patterns && snap.patterns.length ? ` · also ${snap.patterns.join(', ')}` : '';
    $('prefix').textContent = `${snap.prefix ? `prefix ${snap.prefix}` : 'no prefix'}${also}`;
    $('updated').textContent = `Updated ${clock(snap.generated_at_ms)}`;
    const writes = $('writes');
    writes.textContent = snap.writes_allowed ? 'Writes enabled' : 'Read-only';
    writes.classList.toggle('on', snap.writes_allowed);
    writes.title = snap.writes_allowed ? 'Dead letters can be redriven and purged from this page' : WRITES_OFF;

    const r = snap.redis || {};
    $('redis-version').textContent = r.version ? `${r.version}${r.mode && r.mode !== 'standalone' ? ` (${r.mode})` : ''}` : '–';
    $('redis-memory').textContent = r.maxmemory ? `${bytes(r.used_memory)} of ${bytes(r.maxmemory)}` : bytes(r.used_memory);
    $('redis-clients').textContent = num(r.connected_clients);
    $('redis-ops').textContent = num(r.ops_per_sec);
    $('redis-uptime').textContent = duration(r.uptime_seconds);
    $('dlq-total').textContent = num(snap.dlq.length);

    renderNodes(snap);
    renderStreams(snap);
    renderGroups(snap);
    renderDeadLetters(snap);
    if (state.page) {
      const listed = listedStream(snap, state.page);
      if (listed) renderStreamInfo(listed);
      // The pending entries follow the snapshots too, as far as they were paged.
      loadPending('refresh');
    } else if (!state.letter) {
      drawCharts();
    }
  }

  function memory(n) {
    return n.maxmemory ? `${bytes(n.used_memory)} of ${bytes(n.maxmemory)}` : bytes(n.used_memory);
  }

  function renderNodes(snap) {
    const view = snap.nodes || { topology: '', nodes: [], totals: {} };
    $('nodes-count').textContent = view.nodes.length ? `(${view.nodes.length})` : '';
    $('nodes-topology').textContent = view.topology === 'cluster' ? 'masters of the cluster' : view.topology;
    syncRows($('nodes-body'), view.nodes, (n) => n.address, (n) => {
      const server = [n.server, n.version].filter((p) => p).join(' ') || '–';
      return el('tr', { 'data-testid': 'node-row', 'data-node': n.address },
        el('th', { scope: 'row', class: 'mono' }, n.address),
        el('td', {}, server, n.role ? el('span', { class: 'sub muted' }, n.role) : null),
        cell(memory(n), 'num'),
        cell(num(n.ops_per_sec), 'num'),
        cell(num(n.connected_clients), 'num'),
        cell(num(n.keys), 'num'),
        cell(num(n.stream_count), 'num'),
        cell(num(n.stream_entries), 'num'),
        el('td', { class: 'num', title: lookups(n), 'data-testid': 'node-hit-ratio' }, ratio(n.hit_ratio)));
    }, null);
    const t = view.totals;
    $('nodes-total-memory').textContent = memory(t);
    $('nodes-total-ops').textContent = num(t.ops_per_sec);
    $('nodes-total-clients').textContent = num(t.connected_clients);
    $('nodes-total-keys').textContent = num(t.keys);
    $('nodes-total-streams').textContent = num(t.stream_count);
    $('nodes-total-entries').textContent = num(t.stream_entries);
    for (const id of ['nodes-total-hit-ratio', 'redis-hit-ratio']) {
      $(id).textContent = ratio(t.hit_ratio);
      $(id).title = lookups(t).replace('the node', 'each node');
    }
  }

  function renderStreams(snap) {
    const body = $('streams-body');
    $('streams-count').textContent = snap.streams.length ? `(${snap.streams.length})` : '';
    $('streams-empty').hidden = snap.streams.length > 0;
    $('streams-table').hidden = snap.streams.length === 0;
    const items = snap.streams.map((s) => ({ s, r: currentRate(s.name), h: (state.history.get(s.name) || []).length }));
    state.seenStreams = syncRows(body, items, (i) => i.s.name, ({ s, r }) => {
      const tags = [];
      if (s.dead_letter) tags.push(el('span', { class: 'tag dlq' }, 'dead letters'));
      const full = s.short_name === s.name ? [] : [el('span', { class: 'sub mono' }, s.name)];
      if (s.node) full.push(el('span', { class: 'sub muted', 'data-testid': 'stream-node' }, `on ${s.node}`));
      const link = el('a', { class: 'name', href: streamHref(s.name), 'data-testid': 'stream-link' }, s.short_name);
      const name = el('td', {}, link, ...tags, ...full);
      const old = s.oldest_pending_age_secs;
      return el('tr', { 'data-testid': 'stream-row', 'data-stream': s.name },
        name,
        cell(num(s.length), 'num', s.first_id ? `Ids ${s.first_id} … ${s.last_id}` : 'Empty'),
        cell(num(s.consumer_groups.length), 'num'),
        cell(num(s.lag), `num${s.lag > 0 ? ' hot' : ''}`),
        cell(num(s.pending), `num${s.pending > 0 ? ' hot' : ''}`),
        cell(duration(old), `num${old > 60 ? ' bad' : ''}`),
        cell(rate(r), 'num'),
        el('td', {}, sparkline(s.name)));
    }, state.seenStreams);
  }

  function renderGroups(snap) {
    const groups = [];
    for (const s of snap.streams) for (const g of s.consumer_groups) groups.push({ stream: s.short_name, full: s.name, g });
    $('groups-count').textContent = groups.length ? `(${groups.length})` : '';
    $('groups-empty').hidden = groups.length > 0;
    $('groups-table').hidden = groups.length === 0;
    syncRows($('groups-body'), groups, (i) => `${i.full}\u0000${i.g.name}`, ({ stream, full, g }) => {
      const list = el('ul', { class: 'consumers' });
      for (const c of g.consumers) {
        list.append(el('li', {}, el('span', { class: 'mono' }, c.name), ' ',
          el('span', { class: 'muted' }, `${num(c.pending)} pending, idle ${duration(c.idle_ms / 1000)}`)));
      }
      if (!g.consumers.length) list.append(el('li', { class: 'muted' }, g.consumer_count ? `${num(g.consumer_count)} consumers` : 'none'));
      return el('tr', { 'data-testid': 'group-row', 'data-stream': full, 'data-group': g.name },
        el('td', {}, el('span', { class: 'name' }, stream)),
        el('td', {}, el('span', { class: 'mono' }, g.name)),
        el('td', {}, list),
        cell(num(g.pending), `num${g.pending > 0 ? ' hot' : ''}`),
        cell(num(g.lag), `num${g.lag > 0 ? ' hot' : ''}`),
        cell(duration(g.oldest_pending_age_secs), `num${g.oldest_pending_age_secs > 60 ? ' bad' : ''}`),
        cell(g.oldest_pending_idle_ms == null ? '–' : duration(g.oldest_pending_idle_ms / 1000), 'num'),
        cell(g.last_delivered_id, 'mono'));
    }, null);
  }

  function renderDeadLetters(snap) {
    const dlq = snap.dlq;
    const writes = snap.writes_allowed;
    $('dlq-count').textContent = dlq.length ? `(${num(dlq.length)})` : '';
    for (const [id, enabled] of [['redrive-all', writes && dlq.length > 0], ['purge', writes && dlq.length > 0]]) {
      const button = $(id);
      button.disabled = !enabled;
      $(`${id}-wrap`).title = writes ? '' : WRITES_OFF;
      if (writes) button.removeAttribute('aria-describedby');
      else button.setAttribute('aria-describedby', 'writes-off-help');
    }
    // The table is a page of GET /api/dlq/page: read again when the dead-letter stream changed.
    const stream = snap.streams.find((s) => s.name === dlq.stream);
    const sig = `${dlq.length}|${stream ? stream.last_id : ''}|${writes}`;
    if (sig !== state.dlq.sig) {
      state.dlq.sig = sig;
      loadDeadLetters();
    }
  }

  function deadLetterRow(e, writes) {
    const button = el('button', {
      type: 'button', class: 'redrive', 'data-testid': 'redrive-button', 'data-id': e.id,
      'aria-label': `Redrive dead letter ${e.id} (${e.original_type || 'unknown type'})`,
    }, 'Redrive');
    const wrap = el('span', { class: 'action-wrap' }, button);
    if (!writes) {
      button.disabled = true;
      button.setAttribute('aria-describedby', 'writes-off-help');
      wrap.title = WRITES_OFF;
    } else if (!e.redrivable) {
      button.disabled = true;
      wrap.title = `Cannot be redriven: ${e.decode_error || 'its event does not decode'}`;
    } else {
      wrap.title = `Publish it again to ${e.stream}`;
    }
    const from = el('td', {}, el('span', { class: 'mono wrap' }, e.stream || '–'),
      el('span', { class: 'sub' }, e.group ? `group ${e.group}${e.consumer ? `, ${e.consumer}` : ''}` : 'dead-lettered by hand'));
    const error = el('td', {}, el('span', { class: 'error-text', title: e.error }, e.error || '–'),
      e.payload_preview ? el('span', { class: 'payload' }, el('span', { class: 'muted' }, 'payload '),
        el('code', { title: e.payload_preview }, e.payload_preview)) : null);
    const open = el('a', {
      class: 'sub mono dlq-link', href: letterHref(e.id), 'data-testid': 'dlq-link',
      'aria-label': `Open dead letter ${e.id} whole`,
    }, e.id);
    return el('tr', { 'data-testid': 'dlq-row', 'data-id': e.id },
      el('td', {}, when(e.dead_lettered_at_ms), open),
      el('td', {}, el('span', { class: 'name' }, e.original_type || '–'), e.event_id ? el('span', { class: 'sub mono' }, e.event_id) : null),
      from,
      el('td', { class: 'num', 'data-label': 'Deliveries' }, num(e.deliveries)),
      error,
      el('td', {}, wrap));
  }

  function dlqQuery(before) {
    const q = new URLSearchParams({ count: String(DLQ_PAGE) });
    for (const [k, v] of Object.entries(state.dlq.filters)) if (v) q.set(k, v);
    if (before) q.set('before', before);
    return `/api/dlq/page?${q}`;
  }

  async function loadDeadLetters() {
    const seq = ++state.dlq.seq;
    let page;
    try {
      page = await getJson(dlqQuery(state.dlq.cursor));
    } catch (error) {
      if (seq === state.dlq.seq) $('dlq-note').textContent = sentence(`The dead letters could not be read: ${error.message}`);
      return;
    }
    if (seq !== state.dlq.seq) return; // a newer request is under way
    state.dlq.page = page;
    const writes = state.snapshot ? state.snapshot.writes_allowed : false;
    const filtered = Object.values(state.dlq.filters).some((v) => v);
    $('dlq-empty').hidden = page.entries.length > 0;
    $('dlq-empty').textContent = filtered ? 'No dead letter matches on this page.' : 'The dead-letter stream is empty.';
    if (!filtered && page.length > 0 && page.entries.length === 0) $('dlq-empty').textContent = 'No older dead letters.';
    $('dlq-table').hidden = page.entries.length === 0;
    const where = state.dlq.cursor ? `older than ${state.dlq.cursor}` : 'newest first';
    let note;
    if (filtered) {
      note = `${num(page.count)} match${page.count === 1 ? '' : 'es'} among ${num(page.scanned)} dead letters looked at, ${where}. `
        + `A search looks at up to ${num(page.window)} dead letters per page (the first ${bytes(page.searched_error_bytes)} of each error)`
        + `${page.next_before ? '; Older goes on from where it stopped.' : ', and has reached the oldest.'}`;
    } else {
      note = `${num(page.count)} of ${num(page.length)} dead letters, ${where}.`;
    }
    $('dlq-note').textContent = note;
    $('dlq-newer').disabled = state.dlq.stack.length === 0;
    $('dlq-newest').disabled = state.dlq.cursor == null;
    $('dlq-older').disabled = !page.next_before;
    const items = page.entries.map((e) => ({ e, writes }));
    state.seenDead = syncRows($('dlq-body'), items, (i) => i.e.id, ({ e }) => deadLetterRow(e, writes), state.seenDead);
  }

  function dlqGo(cursor, stack) {
    state.dlq.cursor = cursor;
    state.dlq.stack = stack;
    loadDeadLetters();
  }
  $('dlq-older').addEventListener('click', () => {
    const page = state.dlq.page;
    if (page && page.next_before) dlqGo(page.next_before, [...state.dlq.stack, state.dlq.cursor]);
  });
  $('dlq-newer').addEventListener('click', () => {
    const stack = [...state.dlq.stack];
    const cursor = stack.pop();
    dlqGo(cursor === undefined ? null : cursor, stack);
  });
  $('dlq-newest').addEventListener('click', () => dlqGo(null, []));
  $('dlq-search').addEventListener('submit', (event) => {
    event.preventDefault();
    state.dlq.filters = { type: $('dlq-type').value.trim(), group: $('dlq-group').value.trim(), q: $('dlq-q').value.trim() };
    dlqGo(null, []);
  });
  $('dlq-clear').addEventListener('click', () => {
    for (const id of ['dlq-type', 'dlq-group', 'dlq-q']) $(id).value = '';
    state.dlq.filters = {};
    dlqGo(null, []);
  });

  // ---------- the stream page ----------
  // The snapshot's row of the stream page's stream: by the name in the address, or by the full
  // name the server resolved it to (an address may name a stream by its event type).
  function listedStream(snap, page) {
    const resolved = page.info ? page.info.name : null;
    return snap.streams.find((s) => s.name === page.name || s.name === resolved);
  }
  function streamHref(name) {
    return `#/stream/${encodeURIComponent(name)}`;
  }
  function currentStream() {
    const m = /^#\/stream\/(.+)$/.exec(location.hash);
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (_) { return null; }
  }
  function letterHref(id) {
    return `#/dlq/${encodeURIComponent(id)}`;
  }
  function currentLetter() {
    const m = /^#\/dlq\/(.+)$/.exec(location.hash);
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (_) { return null; }
  }
  function route() {
    const name = currentStream();
    const letter = name == null ? currentLetter() : null;
    $('overview').hidden = name != null || letter != null;
    $('stream-view').hidden = name == null;
    $('dlq-view').hidden = letter == null;
    if (letter != null) {
      state.page = null;
      if (state.letter !== letter) {
        state.letter = letter;
        window.scrollTo(0, 0);
        loadLetter(letter);
      }
      return;
    }
    state.letter = null;
    if (name == null) {
      state.page = null;
      document.title = 'redstream dashboard';
      if (state.snapshot) drawCharts();
      return;
    }
    if (!state.page || state.page.name !== name) {
      state.page = { name, cursor: null, stack: [], entries: null, seq: 0, info: null, group: null, pending: [], pendingNext: null, pendingSeq: 0, pendingBusy: false, lastId: null };
      document.title = `${name} · redstream dashboard`;
      $('stream-title').textContent = name;
      $('stream-fullname').textContent = '';
      $('entries-body').replaceChildren();
      $('pending-body').replaceChildren();
      $('stream-error').hidden = true;
      window.scrollTo(0, 0);
      loadStreamInfo();
      loadEntries();
    }
  }
  window.addEventListener('hashchange', route);

  function streamError(error) {
    const box = $('stream-error');
    box.textContent = sentence(error.message);
    box.hidden = false;
  }

  // The stream's summary, groups and consumers: from the snapshot when it lists the stream,
  // else from GET /api/stream/{name}.
  async function loadStreamInfo() {
    const page = state.page;
    const listed = state.snapshot && listedStream(state.snapshot, page);
    if (listed) { renderStreamInfo(listed); return; }
    try {
      const info = await getJson(`/api/stream/${encodeURIComponent(page.name)}`);
      if (state.page === page) renderStreamInfo(info);
    } catch (error) {
      if (state.page === page) streamError(error);
    }
  }

  function renderStreamInfo(s) {
    const page = state.page;
    page.info = s;
    $('stream-error').hidden = true;
    $('stream-title').textContent = s.short_name || s.name;
    $('stream-fullname').textContent = s.short_name && s.short_name !== s.name ? s.name : '';
    document.title = `${s.short_name || s.name} · redstream dashboard`;
    $('stream-length').textContent = num(s.length);
    $('stream-groups').textContent = num(s.consumer_groups.length);
    $('stream-lag').textContent = num(s.lag);
    $('stream-pending').textContent = num(s.pending);
    $('stream-rate').textContent = rate(currentRate(s.name));
    $('stream-last').textContent = s.last_id || '–';
    $('stream-groups-count').textContent = s.consumer_groups.length ? `(${s.consumer_groups.length})` : '';
    $('stream-groups-empty').hidden = s.consumer_groups.length > 0;
    $('stream-groups-table').hidden = s.consumer_groups.length === 0;
    syncRows($('stream-groups-body'), s.consumer_groups, (g) => g.name, (g) => {
      const list = el('ul', { class: 'consumers' });
      for (const c of g.consumers) {
        list.append(el('li', { 'data-testid': 'consumer' }, el('span', { class: 'mono' }, c.name), ' ',
          el('span', { class: 'muted' }, `${num(c.pending)} pending, idle ${duration(c.idle_ms / 1000)}`)));
      }
      if (!g.consumers.length) list.append(el('li', { class: 'muted' }, g.consumer_count ? `${num(g.consumer_count)} consumers` : 'none'));
      return el('tr', { 'data-testid': 'stream-group-row', 'data-group': g.name },
        el('th', { scope: 'row', class: 'mono' }, g.name),
        el('td', {}, list),
        cell(num(g.pending), `num${g.pending > 0 ? ' hot' : ''}`),
        cell(num(g.lag), `num${g.lag > 0 ? ' hot' : ''}`),
        cell(duration(g.oldest_pending_age_secs), `num${g.oldest_pending_age_secs > 60 ? ' bad' : ''}`),
        cell(g.last_delivered_id, 'mono'));
    }, null);
    // The group picker of the pending entries.
    const select = $('pending-group');
    const names = s.consumer_groups.map((g) => g.name);
    const had = [...select.options].map((o) => o.value);
    if (had.join('\u0000') !== names.join('\u0000')) {
      select.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
      if (page.group && names.includes(page.group)) select.value = page.group;
    }
    select.closest('label').hidden = names.length === 0;
    const wanted = names.includes(page.group) ? page.group : (names[0] || null);
    if (wanted !== page.group) { page.group = wanted; loadPending(false); }
    else if (!names.length) loadPending(false);
    // New entries on the newest page are shown as they come.
    if (page.cursor == null && page.entries && s.last_id !== page.lastId) loadEntries();
  }

  async function loadEntries() {
    const page = state.page;
    const seq = ++page.seq;
    const q = new URLSearchParams({ count: String(ENTRY_PAGE) });
    if (page.cursor) q.set('before', page.cursor);
    let answer;
    try {
      answer = await getJson(`/api/stream/${encodeURIComponent(page.name)}/entries?${q}`);
    } catch (error) {
      if (state.page === page && seq === page.seq) streamError(error);
      return;
    }
    if (state.page !== page || seq !== page.seq) return;
    page.entries = answer;
    if (page.cursor == null) page.lastId = answer.messages.length ? answer.messages[0].id : null;
    $('entries-empty').hidden = answer.messages.length > 0;
    $('entries-table').hidden = answer.messages.length === 0;
    const where = page.cursor ? `older than ${page.cursor}` : 'the newest';
    $('entries-note').textContent = `${num(answer.count)} of ${num(answer.length)} entries, ${where}. `
      + `Events over ${bytes(answer.event_preview_bytes)} and fields over 4 KiB are cut; Whole entry reads one whole.`;
    $('entries-newer').disabled = page.stack.length === 0;
    $('entries-newest').disabled = page.cursor == null;
    $('entries-older').disabled = !answer.next_before;
    syncRows($('entries-body'), answer.messages, (m) => m.id, entryRow, null);
  }

  // JSON text formatted, or the text as it is when it is not JSON.
  function pretty(text) {
    const t = String(text).trim();
    if (t.startsWith('{') || t.startsWith('[')) {
      try { return JSON.stringify(JSON.parse(t), null, 2); } catch (_) { /* not JSON */ }
    }
    return String(text);
  }

  function entryRow(m) {
    const ms = Number(m.id.split('-')[0]);
    const head = el('td', { class: 'entry-id' }, when(ms), el('span', { class: 'sub mono' }, m.id));
    let kind;
    let body;
    if (m.event) {
      const meta = m.event.metadata || {};
      kind = el('td', {}, el('span', { class: 'name' }, m.event.type),
        el('span', { class: 'sub mono' }, m.event.id),
        meta.priority && meta.priority !== 'normal' ? el('span', { class: 'tag' }, meta.priority) : null);
      body = el('td', { class: 'payload-cell' },
        el('pre', { class: 'json', 'data-testid': 'entry-payload' }, JSON.stringify(m.event.payload, null, 2)),
        el('details', {}, el('summary', {}, 'Metadata'), el('pre', { class: 'json' }, JSON.stringify(meta, null, 2))));
    } else {
      // An event too large for this view is cut, not foreign.
      const cut = m.truncated && m.fields.some(([name]) => name === 'event');
      kind = el('td', {}, el('span', { class: 'tag' }, cut ? 'event cut to a preview' : 'foreign entry'),
        m.decode_error ? el('span', { class: 'sub muted' }, sentence(m.decode_error)) : null);
      const fields = el('dl', { class: 'fields', 'data-testid': 'entry-fields' });
      for (const [name, value] of m.fields) {
        fields.append(el('dt', { class: 'mono' }, name), el('dd', {}, el('pre', { class: 'json' }, pretty(value))));
      }
      body = el('td', { class: 'payload-cell' }, fields);
    }
    if (m.truncated) {
      const button = el('button', { type: 'button', class: 'whole', 'data-testid': 'whole-entry-button', 'data-id': m.id }, 'Whole entry');
      body.append(el('p', { class: 'small muted' }, 'Cut to a preview. ', button));
    }
    return el('tr', { 'data-testid': 'entry-row', 'data-id': m.id }, head, kind, body);
  }

  $('entries-body').addEventListener('click', async (event) => {
    const button = event.target.closest('button.whole');
    if (!button || !state.page) return;
    const page = state.page;
    const id = button.dataset.id;
    button.disabled = true;
    button.textContent = 'Reading…';
    try {
      const answer = await getJson(`/api/streams/${encodeURIComponent(page.name)}?startId=${encodeURIComponent(id)}&count=1`);
      const m = answer.messages[0];
      const row = button.closest('tr');
      if (m && m.id === id && row && state.page === page) {
        const whole = entryRow(m);
        whole.dataset.key = row.dataset.key;
        whole.dataset.sig = row.dataset.sig;
        whole.classList.add('whole-read');
        row.replaceWith(whole);
      }
    } catch (error) {
      notice(error.message, true);
      button.disabled = false;
      button.textContent = 'Whole entry';
    }
  });
  $('entries-older').addEventListener('click', () => {
    const page = state.page;
    if (!page || !page.entries || !page.entries.next_before) return;
    page.stack.push(page.cursor);
    page.cursor = page.entries.next_before;
    loadEntries();
  });
  $('entries-newer').addEventListener('click', () => {
    const page = state.page;
    if (!page || !page.stack.length) return;
    page.cursor = page.stack.pop();
    loadEntries();
  });
  $('entries-newest').addEventListener('click', () => {
    const page = state.page;
    if (!page) return;
    page.cursor = null;
    page.stack = [];
    loadEntries();
  });

  // `false`: the first page of the group; `true`: the next page after those shown; 'refresh':
  // those shown again (at least the first page), skipped while a read is under way.
  async function loadPending(more) {
    const page = state.page;
    if (!page) return;
    const refresh = more === 'refresh';
    if (refresh && (page.pendingBusy || !page.group)) return;
    const group = page.group;
    const body = $('pending-body');
    if (!group) {
      body.replaceChildren();
      $('pending-table').hidden = true;
      $('pending-empty').hidden = false;
      $('pending-empty').textContent = 'No consumer group reads this stream.';
      $('pending-more').hidden = true;
      $('pending-note').textContent = '';
      return;
    }
    const count = refresh ? Math.min(Math.max(PENDING_PAGE, page.pending.length), 1000) : PENDING_PAGE;
    const q = new URLSearchParams({ group, count: String(count) });
    const append = more === true;
    if (append && page.pendingNext) q.set('startId', page.pendingNext);
    const seq = ++page.pendingSeq;
    page.pendingBusy = true;
    let answer;
    try {
      answer = await getJson(`/api/streams/${encodeURIComponent(page.name)}/pending?${q}`);
    } catch (error) {
      if (state.page === page && seq === page.pendingSeq) streamError(error);
      return;
    } finally {
      if (seq === page.pendingSeq) page.pendingBusy = false;
    }
    // A newer read (another group, More, a refresh) answers instead.
    if (state.page !== page || page.group !== group || seq !== page.pendingSeq) return;
    page.pending = append ? page.pending.concat(answer.pending) : answer.pending;
    page.pendingNext = answer.next_start_id;
    $('pending-table').hidden = page.pending.length === 0;
    $('pending-empty').hidden = page.pending.length > 0;
    $('pending-empty').textContent = 'Nothing is pending in this group.';
    $('pending-more').hidden = !answer.next_start_id;
    $('pending-note').textContent = page.pending.length
      ? `The oldest ${num(page.pending.length)} pending entries of ${group}, read at ${clock(Date.now())}; they follow the refresh.` : '';
    syncRows(body, page.pending, (p) => p.id, (p) => el('tr', { 'data-testid': 'pending-row', 'data-id': p.id },
      el('td', { class: 'mono' }, p.id),
      el('td', { class: 'mono' }, p.consumer),
      cell(duration(p.idle_ms / 1000), `num${p.idle_ms > 60000 ? ' bad' : ''}`),
      cell(num(p.deliveries), `num${p.deliveries > 1 ? ' hot' : ''}`)), null);
  }
  $('pending-group').addEventListener('change', (event) => {
    if (!state.page) return;
    state.page.group = event.target.value;
    loadPending(false);
  });
  $('pending-more').addEventListener('click', () => loadPending(true));

  // ---------- one dead letter, whole ----------
  async function loadLetter(id) {
    document.title = `Dead letter ${id} · redstream dashboard`;
    $('dlq-detail-id').textContent = id;
    for (const part of ['type', 'stream', 'group', 'consumer', 'deliveries', 'when']) $(`dlq-detail-${part}`).textContent = '–';
    for (const part of ['error', 'payload', 'meta', 'event-note', 'fields-note', 'fields-count']) $(`dlq-detail-${part}`).textContent = '';
    $('dlq-detail-fields').replaceChildren();
    $('dlq-detail-problem').hidden = true;
    $('dlq-view').dataset.state = 'loading';
    let e;
    try {
      e = await getJson(`/api/dlq/${encodeURIComponent(id)}`);
    } catch (error) {
      if (state.letter !== id) return;
      $('dlq-detail-problem').textContent = sentence(error.message);
      $('dlq-detail-problem').hidden = false;
      $('dlq-view').dataset.state = 'error';
      return;
    }
    if (state.letter !== id) return;
    renderLetter(e);
    $('dlq-view').dataset.state = 'loaded';
  }

  function renderLetter(e) {
    $('dlq-detail-type').textContent = e.original_type || '–';
    $('dlq-detail-stream').textContent = e.stream || '–';
    $('dlq-detail-group').textContent = e.group || (e.stream ? '–' : 'dead-lettered by hand');
    $('dlq-detail-consumer').textContent = e.consumer || '–';
    $('dlq-detail-deliveries').textContent = num(e.deliveries);
    $('dlq-detail-when').textContent = when(e.dead_lettered_at_ms);
    $('dlq-detail-error').textContent = e.error || '–';
    const meta = $('dlq-detail-meta-box');
    if (e.event) {
      $('dlq-detail-event-note').textContent = `${e.event.type} ${e.event.id}, ${bytes(e.event_bytes)} stored. The payload as JSON:`;
      $('dlq-detail-payload').textContent = JSON.stringify(e.event.payload, null, 2);
      $('dlq-detail-meta').textContent = JSON.stringify(e.event.metadata || {}, null, 2);
      meta.hidden = false;
    } else {
      const why = e.decode_error ? sentence(e.decode_error) : 'It was not read whole.';
      $('dlq-detail-event-note').textContent = `The event does not decode: ${why} The stored event field${e.raw_event && e.raw_event.endsWith('...') ? ', cut' : ''}:`;
      $('dlq-detail-payload').textContent = e.raw_event == null ? '–' : pretty(e.raw_event);
      meta.hidden = true;
    }
    const fields = $('dlq-detail-fields');
    const items = [];
    for (const [name, value] of e.fields) {
      const shown = value === '' ? el('span', { class: 'muted small' }, '(empty)') : el('pre', { class: 'json' }, pretty(value));
      items.push(el('dt', { class: 'mono' }, name), el('dd', {}, shown));
    }
    fields.replaceChildren(...items);
    $('dlq-detail-fields-count').textContent = `(${num(e.fields.length)})`;
    $('dlq-detail-fields-note').textContent = e.fields_truncated
      ? 'Some fields are cut at 4 KiB, or left out past the first 256.'
      : 'Every field of the dead-letter entry, as stored.';
  }

  // ---------- status ----------
  function setConnection(kind, text) {
    const c = $('connection');
    c.dataset.state = kind;
    c.textContent = text;
  }
  function showError(error) {
    const alert = $('alert');
    alert.textContent = `${sentence(error.message || 'The dashboard could not read Redis')} Showing the last data received.`;
    alert.hidden = false;
    $('main').classList.add('stale');
    setConnection('error', 'Redis unavailable');
  }
  let noticeTimer = null;
  function notice(text, bad) {
    const n = $('notice');
    n.textContent = text;
    n.classList.toggle('bad', !!bad);
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { n.hidden = true; }, 6000);
  }

  // ---------- requests ----------
  async function getJson(path) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { headers, cache: 'no-store' });
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) throw new Error((data && data.error && data.error.message) || `HTTP ${response.status}`);
    return data;
  }

  // ---------- actions ----------
  async function post(path, body) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body), cache: 'no-store' });
    let data = null;
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) throw new Error((data && data.error && data.error.message) || `HTTP ${response.status}`);
    return data;
  }
  function askRefresh() {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send('refresh');
  }
  function describe(report) {
    let text = `Redriven ${report.redriven} dead letter${report.redriven === 1 ? '' : 's'}.`;
    if (report.skipped.length) text += ` Skipped ${report.skipped.length}: ${report.skipped[0].reason}`;
    return text;
  }
  async function act(button, busyText, path, body, onDone) {
    const label = button.textContent;
    button.disabled = true;
    button.textContent = busyText;
    try {
      const result = await post(path, body);
      onDone(result);
      askRefresh();
    } catch (error) {
      notice(error.message, true);
      button.disabled = false;
    } finally {
      button.textContent = label;
    }
  }
  $('dlq-body').addEventListener('click', (event) => {
    const button = event.target.closest('button.redrive');
    if (!button || button.disabled) return;
    const id = button.dataset.id;
    act(button, 'Redriving…', '/api/dlq/redrive', { ids: [id] }, (report) => {
      notice(describe(report), report.redriven === 0);
      if (report.redriven > 0) {
        const row = button.closest('tr');
        if (row) row.remove();
      }
    });
  });
  $('redrive-all').addEventListener('click', (event) => {
    const n = state.snapshot ? state.snapshot.dlq.length : 0;
    if (!window.confirm(`Redrive all ${num(n)} dead letters to the streams they came from?`)) return;
    act(event.currentTarget, 'Redriving…', '/api/dlq/redrive', { all: true }, (report) => notice(describe(report), false));
  });
  $('purge').addEventListener('click', (event) => {
    const n = state.snapshot ? state.snapshot.dlq.length : 0;
    if (!window.confirm(`Delete all ${num(n)} dead letters? This cannot be undone.`)) return;
    act(event.currentTarget, 'Purging…', '/api/dlq/purge', {}, (result) => notice(`Purged ${num(result.purged)} dead letters.`, false));
  });

  // ---------- the feed ----------
  function connect() {
    setConnection('connecting', 'Connecting…');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = token ? `?token=${encodeURIComponent(token)}` : '';
    const ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
    state.ws = ws;
    ws.addEventListener('open', () => { state.retry = 0; loadHistory(); });
    ws.addEventListener('message', (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch (_) { return; }
      if (data.type === 'snapshot') render(data);
      else if (data.type === 'error') showError(data.error || {});
    });
    ws.addEventListener('close', () => {
      state.ws = null;
      const delay = Math.min(30000, 1000 * 2 ** state.retry);
      state.retry += 1;
      setConnection('closed', `Disconnected; retrying in ${Math.round(delay / 1000)} s`);
      $('main').classList.add('stale');
      setTimeout(connect, delay);
    });
  }

  if (token) $('metrics-link').replaceWith(document.createTextNode('Prometheus metrics at /metrics'));
  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.snapshot) drawCharts(); }, 150);
  });
  route();
  connect();
})();
