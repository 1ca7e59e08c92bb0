// The redstream dashboard: renders the snapshots the server pushes over /ws.
// Plain browser JavaScript, no dependencies. Text from the server is only ever set with
// textContent or attributes, never parsed as HTML.
(() => {
  'use strict';

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const HISTORY_MS = 10 * 60 * 1000;
  const CHART_SERIES = 6;
  const SPARK_POINTS = 30;
  const WRITES_OFF = 'Write actions are disabled: start the dashboard with --allow-writes';

  const token = new URLSearchParams(location.search).get('token');
  const $ = (id) => document.getElementById(id);

  const state = {
    snapshot: null,
    lastTime: null,
    prev: new Map(),     // stream -> { t, length, lastId }
    history: new Map(),  // stream -> [{ t, rate }]
    seenStreams: null,   // Set of stream names rendered before (null before the first render)
    seenDead: null,
    ws: null,
    retry: 0,
  };

  // ---------- formatting ----------
  const nf = new Intl.NumberFormat('en-US');
  const num = (n) => (n == null ? '–' : nf.format(n));
  function bytes(b) {
    if (b == null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i += 1; }
    return `${b < 10 && i > 0 ? b.toFixed(1) : Math.round(b)} ${units[i]}`;
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
  function clock(ms) {
    return ms == null ? '–' : new Date(ms).toLocaleTimeString([], { hour12: false });
  }
  function when(ms) {
    if (ms == null) return '–';
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    return today ? clock(ms) : d.toLocaleString([], { hour12: false });
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
  function updateRates(snap) {
    const t = snap.generated_at_ms;
    const present = new Set();
    for (const s of snap.streams) {
      present.add(s.name);
      let p = state.prev.get(s.name);
      // A stream that appeared since the previous snapshot had no entries then.
      if (!p && state.lastTime != null && state.lastTime < t) p = { t: state.lastTime, length: 0, lastId: null };
      if (p && t > p.t) {
        let added = s.length - p.length;
        // MAXLEN trimming can keep the length flat while entries arrive: count at least one.
        if (added <= 0 && s.last_id && s.last_id !== p.lastId) added = 1;
        const r = Math.max(0, added) / ((t - p.t) / 1000);
        const h = state.history.get(s.name) || [];
        h.push({ t, rate: r });
        while (h.length && h[0].t < t - HISTORY_MS) h.shift();
        state.history.set(s.name, h);
      }
      state.prev.set(s.name, { t, length: s.length, lastId: s.last_id });
    }
    for (const name of [...state.prev.keys()]) {
      if (!present.has(name)) { state.prev.delete(name); state.history.delete(name); }
    }
    state.lastTime = t;
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

  function drawChart() {
    const chart = $('throughput-chart');
    const width = Math.max(320, Math.round(chart.clientWidth || 800));
    const height = 220;
    const pad = { l: 52, r: 14, t: 12, b: 26 };
    chart.setAttribute('viewBox', `0 0 ${width} ${height}`);
    chart.replaceChildren();
    const legend = $('throughput-legend');
    const now = state.lastTime;
    // The time axis spans the history there is, from one minute up to ten.
    let oldest = now;
    for (const h of state.history.values()) if (h.length && h[0].t < oldest) oldest = h[0].t;
    const span = now == null ? HISTORY_MS : Math.min(HISTORY_MS, Math.max(60000, now - oldest));
    $('throughput-span').textContent = `events per second, last ${ago(span).slice(1)}`;
    const series = [...state.history.entries()]
      .map(([name, h]) => ({ name, h, peak: Math.max(0, ...h.map((p) => p.rate)), last: h.length ? h[h.length - 1].rate : 0 }))
      .filter((s) => s.h.length > 0 && s.peak > 0)
      .sort((a, b) => b.peak - a.peak || a.name.localeCompare(b.name))
      .slice(0, CHART_SERIES);
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
      const msg = svg('text', { class: 'nodata', x: pad.l + plotW / 2, y: pad.t + plotH / 2, 'text-anchor': 'middle' });
      msg.textContent = state.history.size ? `No new events in the last ${ago(span).slice(1)}` : 'Waiting for a second snapshot…';
      chart.append(msg);
      $('throughput-summary').textContent = msg.textContent;
      return;
    }
    series.forEach((s, i) => {
      const points = s.h.map((p) => `${x(p.t).toFixed(1)},${y(p.rate).toFixed(1)}`).join(' ');
      chart.append(svg('polyline', { class: `series c${i}`, points }));
      const last = s.h[s.h.length - 1];
      chart.append(svg('circle', { class: `dot c${i}`, cx: x(last.t).toFixed(1), cy: y(last.rate).toFixed(1), r: 3 }));
      legend.append(el('li', {}, el('span', { class: `swatch c${i}`, 'aria-hidden': 'true' }), `${shortName(s.name)} `,
        el('span', { class: 'muted' }, `${rate(s.last)}/s`)));
    });
    $('throughput-summary').textContent = series
      .map((s) => `${shortName(s.name)}: ${rate(s.last)} events per second now, peak ${rate(s.peak)}`)
      .join('; ');
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
    drawChart();
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
        cell(num(n.stream_entries), 'num'));
    }, null);
    const t = view.totals;
    $('nodes-total-memory').textContent = memory(t);
    $('nodes-total-ops').textContent = num(t.ops_per_sec);
    $('nodes-total-clients').textContent = num(t.connected_clients);
    $('nodes-total-keys').textContent = num(t.keys);
    $('nodes-total-streams').textContent = num(t.stream_count);
    $('nodes-total-entries').textContent = num(t.stream_entries);
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
      const name = el('td', {}, el('span', { class: 'name' }, s.short_name), ...tags, ...full);
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
    $('dlq-empty').hidden = dlq.entries.length > 0;
    $('dlq-table').hidden = dlq.entries.length === 0;
    const note = $('dlq-note');
    note.hidden = dlq.length <= dlq.entries.length;
    note.textContent = `Showing the oldest ${num(dlq.entries.length)} of ${num(dlq.length)} dead letters; GET /api/dlq?count= reads up to 1,000.`;
    for (const [id, enabled] of [['redrive-all', writes && dlq.length > 0], ['purge', writes && dlq.length > 0]]) {
      const button = $(id);
      button.disabled = !enabled;
      $(`${id}-wrap`).title = writes ? '' : WRITES_OFF;
      if (writes) button.removeAttribute('aria-describedby');
      else button.setAttribute('aria-describedby', 'writes-off-help');
    }
    const items = dlq.entries.map((e) => ({ e, writes }));
    state.seenDead = syncRows($('dlq-body'), items, (i) => i.e.id, ({ e }) => {
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
      const from = el('td', {}, el('span', { class: 'mono' }, e.stream || '–'),
        el('span', { class: 'sub' }, e.group ? `group ${e.group}${e.consumer ? `, ${e.consumer}` : ''}` : 'dead-lettered by hand'));
      const error = el('td', {}, el('span', { class: 'error-text', title: e.error }, e.error || '–'),
        e.payload_preview ? el('span', { class: 'payload' }, el('span', { class: 'muted' }, 'payload '),
          el('code', { title: e.payload_preview }, e.payload_preview)) : null);
      return el('tr', { 'data-testid': 'dlq-row', 'data-id': e.id },
        el('td', {}, when(e.dead_lettered_at_ms), el('span', { class: 'sub mono' }, e.id)),
        el('td', {}, el('span', { class: 'name' }, e.original_type || '–'), e.event_id ? el('span', { class: 'sub mono' }, e.event_id) : null),
        from,
        cell(num(e.deliveries), 'num'),
        error,
        el('td', {}, wrap));
    }, state.seenDead);
  }

  // ---------- status ----------
  function setConnection(kind, text) {
    const c = $('connection');
    c.dataset.state = kind;
    c.textContent = text;
  }
  function showError(error) {
    const alert = $('alert');
    alert.textContent = `${error.message || 'The dashboard could not read Redis.'} Showing the last data received.`;
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
    ws.addEventListener('open', () => { state.retry = 0; });
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
    resizeTimer = setTimeout(() => { if (state.snapshot) drawChart(); }, 150);
  });
  connect();
})();
