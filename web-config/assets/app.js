// The director's page: talks only to the JSON API (docs/openapi.yaml). Nothing the operator or
// the box sends is ever put into the page as HTML: text goes in with textContent.
'use strict';
const $ = (s) => document.querySelector(s);
let csrf = null;
let config = null;
let last = null;
let timer = null;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

async function api(method, path, body, raw) {
  const h = {};
  if (csrf) h['X-CSRF-Token'] = csrf;
  if (body !== undefined) h['Content-Type'] = raw ? 'text/plain' : 'application/json';
  const r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : raw ? body : JSON.stringify(body), credentials: 'same-origin' });
  const text = await r.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) { /* text */ }
  if (r.status === 401 && path !== '/api/login') { csrf = null; show('login'); }
  return { ok: r.ok, status: r.status, data };
}

function notice(msg, bad) {
  const n = $('#notice');
  n.textContent = msg;
  n.className = bad ? 'bad' : 'good';
  n.hidden = !msg;
}

function clearErrors(root) { root.querySelectorAll('.err').forEach((e) => { e.textContent = ''; }); root.querySelectorAll('.invalid').forEach((e) => e.classList.remove('invalid')); }

function fieldError(root, field, msg) {
  const slot = root.querySelector(`.err[data-for="${CSS.escape(field)}"]`);
  const input = root.querySelector(`[data-path="${CSS.escape(field)}"]`);
  if (input) input.classList.add('invalid');
  if (slot) { slot.textContent = msg; return true; }
  return false;
}

function show(view) {
  for (const v of ['setup', 'login', 'main']) $(`#${v}-view`).hidden = v !== view;
  $('#logout').hidden = view !== 'main';
  if (view !== 'main' && timer) { clearInterval(timer); timer = null; }
}

function tab(name, keep) {
  document.querySelectorAll('nav button').forEach((b) => b.classList.toggle('on', b.dataset.tab === name));
  for (const t of ['status', 'config', 'events', 'rs', 'maint']) $(`#tab-${t}`).hidden = t !== name;
  if (name === 'config' && !keep) loadConfig();
  if (name === 'events') loadEvents();
  if (name === 'rs') loadRsSetup();
  if (name === 'maint') loadSystem();
}

// ---- status -------------------------------------------------------------
function fmt(n) { return n >= 1e9 ? (n / 1e9).toFixed(1) + 'G' : n >= 1e6 ? (n / 1e6).toFixed(1) + 'M' : n >= 1e4 ? (n / 1e3).toFixed(1) + 'k' : String(n); }

async function refresh() {
  const r = await api('GET', '/api/status');
  if (!r.ok) return;
  const d = r.data;
  const now = Date.now();
  $('#mode').textContent = d.mode;
  $('#fallback').textContent = d.fallback ? '(fallback: the forwarder could not use its NICs)' : '';
  $('#updated').textContent = new Date().toLocaleTimeString();
  const p = d.confirm_within_s;
  $('#pending').hidden = p === null || p === undefined;
  if (p !== null && p !== undefined) $('#pending-text').textContent = `The management address changed: keep it within ${p} s or it is rolled back.`;
  $('#reboot-needed').hidden = !d.reboot_needed;
  $('#reboot-needed').textContent = d.reboot_needed ? `Reboot needed: ${d.reboot_needed}.` : '';
  const s = d.status;
  const box = $('#services');
  box.replaceChildren();
  $('#warnings').replaceChildren(...((s && s.warnings) || []).map((w) => el('li', { text: w })));
  if (!d.config_valid) box.append(el('p', { text: 'No valid config yet: set one under Configure.' }));
  if (!s) { last = null; return; }
  $('#flows').textContent = s.flow_capacity ? `flows ${s.flows} / ${s.flow_capacity}` : `connections ${s.flows}`;
  const prev = last;
  s.services.forEach((svc, i) => {
    const rows = svc.real_servers.map((rs, j) => {
      const before = prev && prev.s.services[i] && prev.s.services[i].real_servers[j];
      const secs = prev ? (now - prev.at) / 1000 : 0;
      const pps = rs.rates ? rs.rates.pps : before && secs > 0 ? Math.max(0, Math.round((rs.packets - before.packets) / secs)) : 0;
      const mac = rs.mac ? rs.mac + (rs.reachable ? '' : ' (stale)') : 'unresolved';
      const h = rs.health;
      const health = h ? `${h.state.toUpperCase()} · ${h.last}` : 'not checked';
      const row = el('tr', { class: rs.weight === 0 ? 'drain' : '' },
        el('td', { text: rs.address }), el('td', { text: mac }), el('td', { text: String(rs.weight) }),
        el('td', { text: health, class: h ? `health-${h.state}` : '', 'data-health': rs.address, title: h ? `${h.check}; since ${new Date(h.since_unix_ms).toLocaleString()}` : '' }),
        el('td', { text: String(rs.active) }), el('td', { text: String(rs.inactive) }), el('td', { text: fmt(rs.conns) }),
        el('td', { text: fmt(rs.packets), 'data-rs': rs.address, 'data-packets': String(rs.packets) }), el('td', { text: fmt(rs.bytes) }), el('td', { text: String(pps) }));
      // The doctor's findings, under the server they are about.
      const notes = (rs.diagnosis || []).map((d) => el('tr', { class: 'diagnosis' }, el('td', { colspan: '10', text: `⚠ ${d}`, 'data-diagnosis': rs.address })));
      return [row, ...notes];
    }).flat();
    const head = el('tr', {}, ...['Real server', 'MAC', 'Weight', 'Health', 'Active', 'Inactive', 'Conns', 'Packets', 'Bytes', 'Pkt/s'].map((h) => el('th', { text: h })));
    const state = svc.state ? ` · ${svc.state.toUpperCase()}` : '';
    const sorry = svc.sorry_server ? ` · sorry server ${svc.sorry_server}` : '';
    const group = svc.persistence_group ? ` (group ${svc.persistence_group})` : '';
    const title = `${svc.protocol.toUpperCase()} ${svc.vip}:${statusPorts(svc)} · ${svc.scheduler}${svc.persistence_s ? ' · persistent ' + svc.persistence_s + ' s' + group : ''} · ${svc.forwarding}${sorry}${state}`;
    box.append(el('h3', { text: title, class: svc.state === 'down' ? 'svc-down' : '' }), el('table', { class: 'svc' }, el('thead', {}, head), el('tbody', {}, ...rows)));
    box.append(el('div', { class: 'charts', 'data-service': `${svc.protocol} ${svc.vip}:${statusPorts(svc)}` }));
  });
  drawCharts();
  drawHa(s.ha);
  const events = (s.health_events || []).slice().reverse();
  $('#health-events').replaceChildren(...(events.length ? events.map((e) => el('li', { text: `${new Date(e.at_unix_ms).toLocaleString()} · ${e.service} · ${e.server}: ${e.from} → ${e.to}: ${e.reason}`, class: `health-${e.to}` })) : [el('li', { text: 'none' })]));
  const drops = Object.entries(s.drops || {}).filter(([, n]) => n > 0);
  $('#drops tbody').replaceChildren(...(drops.length ? drops.map(([k, n]) => el('tr', {}, el('td', { text: k }), el('td', { text: fmt(n) }))) : [el('tr', {}, el('td', { text: s.mode === 'ipvs' ? 'the kernel keeps no drop reasons' : 'none' }))]));
  last = { s, at: now };
}

// ---- charts ------------------------------------------------------------------
// Each real server's packets/s and connections over the box's last ten minutes, drawn here as
// SVG (no library, no request elsewhere): one line per server, its colour in the legend.
const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
// The SVG namespace, from an empty <svg> the HTML parser made (no URL in the page's code).
function svg(tag, attrs) { const e = document.createElementNS($('#svg-ns').namespaceURI, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; }

function chart(title, series, pick) {
  const w = 300, h = 90, now = Date.now(), span = 10 * 60 * 1000;
  const max = Math.max(1, ...series.flatMap((s) => s.points.map(pick)));
  const root = svg('svg', { viewBox: `0 0 ${w} ${h + 14}`, class: 'chart', role: 'img', 'aria-label': title });
  const t = svg('text', { x: 2, y: 10, class: 'chart-title' }); t.textContent = `${title} (max ${fmt(Math.round(max))}, last 10 min)`;
  root.append(t, svg('line', { x1: 0, y1: h + 13, x2: w, y2: h + 13, class: 'chart-axis' }));
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => now - p.at_unix_ms <= span)
      .map((p) => `${(w * (1 - (now - p.at_unix_ms) / span)).toFixed(1)},${(h + 13 - (h * pick(p)) / max).toFixed(1)}`);
    if (pts.length) root.append(svg('polyline', { points: pts.join(' '), fill: 'none', stroke: COLOURS[i % COLOURS.length], 'stroke-width': 1.5, 'data-server': s.server, 'data-points': String(pts.length) }));
  });
  return root;
}

async function drawCharts() {
  const r = await api('GET', '/api/history');
  if (!r.ok) return;
  document.querySelectorAll('#services .charts').forEach((div) => {
    const series = r.data.series.filter((s) => s.service === div.dataset.service);
    const legend = el('p', { class: 'legend' }, ...series.map((s, i) => {
      const p = s.points[s.points.length - 1];
      return el('span', { class: 'key', 'data-colour': COLOURS[i % COLOURS.length], text: `■ ${s.server}${p ? ` ${fmt(Math.round(p.pps))} pkt/s, ${p.conns} conns` : ''}` });
    }));
    div.replaceChildren(chart('Packets/s', series, (p) => p.pps), chart('Connections', series, (p) => p.conns), legend);
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    legend.querySelectorAll('.key').forEach((k) => { k.style.color = k.dataset.colour; });
  });
}

// This box's place in its HA pair: state, the peer's last advert, the last change and why,
// flow sync. What needs the operator (split brain, services that differ) is in the warnings.
function drawHa(ha) {
  const box = $('#ha');
  box.hidden = !ha;
  if (!ha) { box.replaceChildren(); return; }
  const p = ha.peer_advert;
  const f = ha.flow_sync || {};
  const ignored = Object.entries(ha.adverts_ignored || {}).map(([k, n]) => `${k} ${n}`).join(', ') || '0';
  const lines = [
    p ? `Peer ${ha.peer}: last advert ${(p.age_ms / 1000).toFixed(1)} s ago, priority ${p.priority}, every ${p.advert_ms} ms${p.same_services ? ', same services' : ', SERVICES DIFFER'}` : `Peer ${ha.peer}: no advert heard yet`,
    ha.last_transition ? `Became ${ha.last_transition.to} at ${new Date(ha.last_transition.at_unix_ms).toLocaleString()}: ${ha.last_transition.why}` : 'No change of role yet',
    `Flows synced: ${fmt(f.flows_sent || 0)} sent, ${fmt(f.flows_received || 0)} received${f.flows_unsent ? `, ${fmt(f.flows_unsent)} unsent` : ''}${f.last_table ? ` · ${f.last_table}` : ''}`,
    `Adverts: ${fmt(ha.adverts_sent)} sent, ${fmt(ha.adverts_received)} received, ignored ${ignored}`,
  ];
  if (ha.split_brain) lines.push(`Split brain: both master for ${(ha.split_brain.duration_ms / 1000).toFixed(1)} s, resolved ${new Date(ha.split_brain.resolved_unix_ms).toLocaleString()}`);
  box.replaceChildren(
    el('h3', { text: `HA pair: ${ha.state.toUpperCase()} · priority ${ha.priority}${ha.preempt ? ', preempt' : ''} · vrid ${ha.vrid} (${ha.virtual_mac})`, class: `ha-${ha.state}`, 'data-ha-state': ha.state }),
    el('ul', {}, ...lines.map((l) => el('li', { text: l }))));
}

// ---- configure ----------------------------------------------------------
const SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'sh', 'mh'];

function input(id, path, value, label, attrs) {
  return [el('label', { for: id, text: label }), el('input', Object.assign({ id, 'data-path': path, value: value === undefined || value === null ? '' : String(value) }, attrs || {})), el('span', { class: 'err', 'data-for': path })];
}

function select(id, path, value, label, options) {
  const s = el('select', { id, 'data-path': path }, ...options.map((o) => el('option', { value: o, text: o })));
  s.value = value;
  return [el('label', { for: id, text: label }), s, el('span', { class: 'err', 'data-for': path })];
}

function rsRow(i, j, rs) {
  const p = `services[${i}].real_servers[${j}]`;
  return el('div', { class: 'rs' },
    el('div', {}, ...input(`svc${i}-rs${j}-address`, `${p}.address`, rs.address, `Real server ${j + 1} address (RIP)`)),
    el('div', {}, ...input(`svc${i}-rs${j}-weight`, `${p}.weight`, rs.weight, 'Weight (0 drains)', { type: 'number', min: '0', max: '65535' })),
    el('button', { type: 'button', text: 'Remove', onclick: () => { readForm(); config.services[i].real_servers.splice(j, 1); drawServices(); } }));
}

// A service's health check and sorry server. Fields left empty take the box's defaults
// (interval and timeout 500 ms, rise and fall 2, the service's port, through the DR path).
const CHECKS = ['none', 'tcp', 'http', 'https', 'udp'];
const HC_NUMBERS = [['port', 'Check port (empty: the service\'s)'], ['interval_ms', 'Interval (ms)'], ['timeout_ms', 'Timeout (ms)'], ['rise', 'Rise (successes to come back)'], ['fall', 'Fall (failures to go down)']];
function healthFields(i, svc) {
  const p = `services[${i}]`;
  const hc = svc.health_check || { type: 'none' };
  const hp = `${p}.health_check`;
  const typeSel = select(`svc${i}-hc-type`, `${hp}.type`, hc.type, 'Health check', CHECKS);
  typeSel[1].addEventListener('change', () => { readForm(); drawServices(); });
  const out = [...typeSel];
  if (hc.type !== 'none') {
    out.push(...select(`svc${i}-hc-via`, `${hp}.via`, hc.via || 'vip', 'Probe path (vip: through the DR path, as clients)', ['vip', 'rip']));
    if (hc.type === 'http' || hc.type === 'https') {
      out.push(...input(`svc${i}-hc-path`, `${hp}.path`, hc.path || '/', 'HTTP path'));
      out.push(...input(`svc${i}-hc-host`, `${hp}.host`, hc.host || '', 'Host name (empty: the address probed; with https also the name sent)'));
      out.push(...input(`svc${i}-hc-expect_status`, `${hp}.expect_status`, hc.expect_status || '200-399', 'Passing HTTP statuses'));
    }
    if (hc.type === 'udp') {
      out.push(...input(`svc${i}-hc-send`, `${hp}.send`, hc.send || '', 'UDP payload (hex)'));
      out.push(...input(`svc${i}-hc-expect`, `${hp}.expect`, hc.expect || '', 'Expected reply (hex, empty: any)'));
    }
    for (const [f, label] of HC_NUMBERS) out.push(...input(`svc${i}-hc-${f}`, `${hp}.${f}`, hc[f], label, { type: 'number', min: '1' }));
  }
  out.push(...input(`svc${i}-sorry`, `${p}.sorry_server`, svc.sorry_server, 'Sorry server (gets new flows while no real server is up; optional)'));
  return out;
}

function readHealth(i, svc) {
  const v = (f) => { const e = $(`#svc${i}-${f}`); return e ? e.value.trim() : ''; };
  const type = v('hc-type');
  if (!type || type === 'none') delete svc.health_check;
  else {
    const hc = { type };
    const via = v('hc-via');
    if (via && via !== 'vip') hc.via = via;
    for (const f of ['path', 'host', 'expect_status', 'send', 'expect']) { const x = v(`hc-${f}`); if (x !== '') hc[f] = x; }
    for (const [f] of HC_NUMBERS) { const x = v(`hc-${f}`); if (x !== '') hc[f] = num(x); }
    svc.health_check = hc;
  }
  const sorry = v('sorry');
  if (sorry) svc.sorry_server = sorry; else delete svc.sorry_server;
}

function drawServices() {
  const box = $('#cfg-services');
  box.replaceChildren();
  config.services.forEach((svc, i) => {
    const p = `services[${i}]`;
    box.append(el('fieldset', { class: 'svc' }, el('legend', { text: `Service ${i + 1}` }),
      ...input(`svc${i}-vip`, `${p}.vip`, svc.vip, 'VIP'),
      ...select(`svc${i}-protocol`, `${p}.protocol`, svc.protocol, 'Protocol', ['tcp', 'udp']),
      ...input(`svc${i}-port`, `${p}.port`, svc.ports !== undefined ? svc.ports : svc.port, 'Port (0 = every port; or a range: 10000-20000)'),
      el('span', { class: 'err', 'data-for': `${p}.ports` }),
      ...select(`svc${i}-scheduler`, `${p}.scheduler`, svc.scheduler, 'Scheduler', SCHEDULERS),
      ...input(`svc${i}-persistence`, `${p}.persistence_s`, svc.persistence_s || 0, 'Persistence (seconds, 0 = off)', { type: 'number', min: '0' }),
      ...input(`svc${i}-group`, `${p}.persistence_group`, svc.persistence_group, 'Persistence group (services naming one keep a client on one server, e.g. ftp)'),
      ...select(`svc${i}-forwarding`, `${p}.forwarding`, svc.forwarding || 'dr', 'Forwarding', ['dr', 'tun', 'nat']),
      ...healthFields(i, svc),
      ...svc.real_servers.map((rs, j) => rsRow(i, j, rs)),
      el('span', { class: 'err', 'data-for': `${p}.real_servers` }),
      el('button', { type: 'button', id: `svc${i}-add-rs`, text: 'Add real server', onclick: () => { readForm(); config.services[i].real_servers.push({ address: '', weight: 1 }); drawServices(); } }),
      el('button', { type: 'button', text: 'Remove service', onclick: () => { readForm(); config.services.splice(i, 1); drawServices(); } })));
  });
}

// A status service's ports as the box names them: 80, 10000-20000, or 0 for every port.
function statusPorts(svc) { return svc.port_last ? `${svc.port}-${svc.port_last}` : `${svc.port}`; }

function num(v) { const n = Number(v); return v.trim() !== '' && Number.isFinite(n) ? n : v; }

function readForm() {
  config.mode = $('#cfg-mode').value;
  config.dip = $('#cfg-dip').value.trim();
  const gw = $('#cfg-gateway').value.trim();
  if (gw) config.gateway = gw; else delete config.gateway;
  config.nics = Object.assign({}, config.nics, { vip_side: $('#cfg-vip-side').value.trim(), rs_side: $('#cfg-rs-side').value.trim() });
  if ($('#cfg-ha-on').checked) {
    const h = (f) => $(`#cfg-ha-${f}`).value.trim();
    config.ha = { peer: h('peer'), vrid: num(h('vrid')), priority: num(h('priority')), advert_ms: num(h('advert_ms')), preempt: h('preempt') === 'true', key: $('#cfg-ha-key').value };
  } else delete config.ha;
  const token = $('#cfg-metrics-token').value.trim();
  if (token) config.metrics = { token }; else delete config.metrics;
  if ($('#cfg-syslog-on').checked) {
    config.syslog = { server: $('#cfg-syslog-server').value.trim(), port: num($('#cfg-syslog-port').value), protocol: $('#cfg-syslog-protocol').value, facility: $('#cfg-syslog-facility').value };
  } else delete config.syslog;
  config.services.forEach((svc, i) => {
    const v = (f) => $(`#svc${i}-${f}`).value;
    svc.vip = v('vip').trim(); svc.protocol = v('protocol'); svc.scheduler = v('scheduler');
    const port = v('port').trim();
    if (port.includes('-')) { svc.ports = port; delete svc.port; } else { svc.port = num(port); delete svc.ports; }
    svc.persistence_s = num(v('persistence')) || 0;
    const group = v('group').trim();
    if (group) svc.persistence_group = group; else delete svc.persistence_group;
    const fw = v('forwarding');
    if (fw === 'dr') delete svc.forwarding; else svc.forwarding = fw;
    svc.real_servers.forEach((rs, j) => { rs.address = v(`rs${j}-address`).trim(); rs.weight = num(v(`rs${j}-weight`)); });
    readHealth(i, svc);
  });
}

function drawConfig() {
  $('#cfg-mode').value = config.mode || 'forwarder';
  $('#cfg-dip').value = config.dip || '';
  $('#cfg-gateway').value = config.gateway || '';
  $('#cfg-vip-side').value = (config.nics && config.nics.vip_side) || '';
  $('#cfg-rs-side').value = (config.nics && config.nics.rs_side) || '';
  const ha = config.ha || {};
  $('#cfg-ha-on').checked = !!config.ha;
  $('#cfg-ha-fields').hidden = !config.ha;
  $('#cfg-ha-peer').value = ha.peer || '';
  $('#cfg-ha-vrid').value = ha.vrid || 51;
  $('#cfg-ha-priority').value = ha.priority || 100;
  $('#cfg-ha-advert_ms').value = ha.advert_ms || 200;
  $('#cfg-ha-preempt').value = ha.preempt === false ? 'false' : 'true';
  $('#cfg-ha-key').value = ha.key || '';
  $('#cfg-metrics-token').value = (config.metrics && config.metrics.token) || '';
  const sl = config.syslog || {};
  $('#cfg-syslog-on').checked = !!config.syslog;
  $('#cfg-syslog-fields').hidden = !config.syslog;
  $('#cfg-syslog-server').value = sl.server || '';
  $('#cfg-syslog-port').value = sl.port || 514;
  $('#cfg-syslog-protocol').value = sl.protocol || 'udp';
  $('#cfg-syslog-facility').value = sl.facility || 'local0';
  drawServices();
}

function formBusy(busy) {
  $('#config-form').querySelectorAll('input, select, button').forEach((e) => { e.disabled = busy; });
}

async function loadConfig() {
  // Nothing can be typed until the config in force is in the form (it would be overwritten).
  formBusy(true);
  const r = await api('GET', '/api/config');
  config = r.ok ? r.data : { version: 1, mode: 'forwarder', nics: { vip_side: 'eth1', rs_side: 'eth2' }, dip: '', services: [] };
  clearErrors($('#config-form'));
  $('#config-error').textContent = '';
  $('#import-notes').hidden = true;
  drawConfig();
  formBusy(false);
}

async function saveConfig(doc) {
  const form = $('#config-form');
  clearErrors(form);
  $('#config-error').textContent = '';
  const r = await api('PUT', '/api/config', doc);
  if (r.ok) { notice(r.data.message); refresh(); return true; }
  const errs = r.data.fields || (r.data.field ? [{ field: r.data.field, message: r.data.error }] : []);
  let placed = 0;
  for (const e of errs) if (fieldError(form, e.field, e.message)) placed += 1;
  if (placed < errs.length || !errs.length) $('#config-error').textContent = r.data.error || `error ${r.status}`;
  notice('Not saved: see the messages beside the fields.', true);
  return false;
}

// ---- events ----------------------------------------------------------------
// The box's event log, newest first, filtered by kind (on the box) and by text (here).
// The connection list, filtered by the fields above it (bounded by the box: it says how many
// more matched).
async function loadConnections() {
  const q = ['vip', 'server', 'client'].map((f) => [f, $(`#conn-${f}`).value.trim()]).filter(([, v]) => v).map(([f, v]) => `${f}=${encodeURIComponent(v)}`).join('&');
  const r = await api('GET', `/api/connections${q ? '?' + q : ''}`);
  const body = $('#connections tbody');
  body.replaceChildren();
  if (!r.ok) { $('#conn-summary').textContent = r.data.error; notice(r.data.error, true); return; }
  const mmss = (s) => `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  for (const c of r.data.entries) {
    body.append(el('tr', { 'data-state': c.state }, ...[c.protocol, mmss(c.expires_s), c.state, `${c.client}:${c.client_port}`, c.virtual_service, `${c.server}:${c.server_port}`].map((t) => el('td', { text: t }))));
  }
  const more = r.data.more ? `, and ${r.data.more} more that match (filter to see them)` : '';
  $('#conn-summary').textContent = `${r.data.entries.length} entries (${r.data.mode})${more}`;
}

async function loadEvents() {
  const kind = $('#events-kind').value;
  const r = await api('GET', `/api/events${kind ? '?kind=' + encodeURIComponent(kind) : ''}`);
  if (!r.ok) { $('#events').replaceChildren(el('li', { text: r.data.error || `error ${r.status}` })); return; }
  const sel = $('#events-kind');
  if (sel.options.length === 1) for (const k of r.data.kinds) sel.append(el('option', { value: k, text: k }));
  const want = $('#events-text').value.trim().toLowerCase();
  const shown = r.data.events.slice().reverse().filter((e) => !want || e.message.toLowerCase().includes(want));
  $('#events').replaceChildren(...(shown.length ? shown.map((e) => el('li', { class: `ev-${e.severity}`, 'data-kind': e.kind, text: `${new Date(e.at_unix_ms).toLocaleString()} · ${e.kind} · ${e.message}` })) : [el('li', { text: 'none' })]));
}

// ---- real-server setup ----------------------------------------------------
async function loadRsSetup() {
  const r = await api('GET', '/api/real-servers/setup');
  const box = $('#rs-setup');
  box.replaceChildren();
  if (!r.ok) { box.append(el('p', { text: r.data.error || 'no config yet' })); return; }
  const router = r.data.router;
  if (router) {
    box.append(el('h3', { text: `The router (the real servers' default gateway; director MAC ${router.director_mac || 'unknown'})` }), el('pre', { id: 'router-setup', text: router.commands }),
      el('button', { text: 'Copy', onclick: () => navigator.clipboard && navigator.clipboard.writeText(router.commands).then(() => notice('Copied.')) }));
  }
  for (const rs of r.data.real_servers) {
    const pre = el('pre', { text: rs.commands });
    box.append(el('h3', { text: `${rs.address} (${rs.forwarding.toUpperCase()}; VIP ${rs.vips.join(', ')})` }), pre,
      el('button', { text: 'Copy', onclick: () => navigator.clipboard && navigator.clipboard.writeText(rs.commands).then(() => notice('Copied.')) }));
  }
}

// ---- maintenance ----------------------------------------------------------
// A foreign file's services (ipvsadm rules, keepalived.conf) into the form, to review and save;
// what the box could not take as written is listed above the form.
async function importServices(path, text, what) {
  const r = await api('POST', path, text, true);
  if (!r.ok) { notice(r.data.error, true); return; }
  await loadConfig();
  config.services = r.data.services;
  tab('config', true); drawConfig();
  const notes = r.data.not_mapped || [];
  $('#import-notes').replaceChildren(...notes.map((n) => el('li', { text: n })));
  $('#import-notes').hidden = notes.length === 0;
  const missed = notes.length ? `; ${notes.length} thing(s) were not imported as written (listed above the form)` : '';
  notice(`${what} loaded into the form${missed}: review and press Save and apply.`);
}

async function download(path, name) {
  const r = await fetch(path, { credentials: 'same-origin' });
  if (!r.ok) { notice('Nothing to export yet.', true); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = el('a', { href: url, download: name });
  document.body.append(a); a.click(); a.remove();
  URL.revokeObjectURL(url);
}

// A capture on the box, downloaded as a .pcap when it ends (the request waits for it).
async function capture() {
  const spec = { nic: $('#cap-nic').value, filter: $('#cap-filter').value, packets: num($('#cap-packets').value), seconds: num($('#cap-seconds').value) };
  const value = $('#cap-value').value.trim();
  if (value) spec.value = value;
  $('#cap-go').disabled = true;
  notice(`Capturing for up to ${spec.seconds} s...`);
  const r = await fetch('/api/capture', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf }, body: JSON.stringify(spec), credentials: 'same-origin' });
  $('#cap-go').disabled = false;
  if (!r.ok) { const e = await r.json().catch(() => ({})); notice(e.error || `error ${r.status}`, true); return; }
  const n = r.headers.get('X-Capture-Packets');
  const url = URL.createObjectURL(await r.blob());
  const a = el('a', { href: url, download: `director-${spec.nic}.pcap` });
  document.body.append(a); a.click(); a.remove();
  URL.revokeObjectURL(url);
  notice(`${n} frame(s) captured: the .pcap is downloaded (tcpdump -r, Wireshark).`);
}

// The system slots: which version each holds, which runs, which boots; the last update.
async function loadSystem() {
  const r = await api('GET', '/api/update');
  if (!r.ok) return;
  const d = r.data;
  if (d.unavailable) { $('#sys-summary').textContent = `Running ${d.version}. Updates are not possible: ${d.unavailable}`; return; }
  $('#sys-summary').textContent = `Running ${d.version} from slot ${(d.running || '?').toUpperCase()}; slot ${d.default.toUpperCase()} boots by default.`;
  $('#sys-slots tbody').replaceChildren(...d.slots.map((s) => {
    const state = [s.running ? 'running' : '', s.default ? 'default' : ''].filter(Boolean).join(', ');
    const cell = el('td');
    if (s.contents === 'verified' && !s.default && !d.trial) {
      cell.append(el('button', { text: `Boot ${s.version} (slot ${s.slot.toUpperCase()})`, 'data-slot': s.slot, onclick: () => switchSlot(s) }));
    }
    return el('tr', {}, el('td', { text: s.slot.toUpperCase() }), el('td', { text: s.version || '' }), el('td', { text: s.contents }), el('td', { text: state }), cell);
  }));
  const last = d.last ? d.last.message : '';
  const trial = d.trial ? `A trial of ${d.trial.version} is ${d.trial.stage}. ` : '';
  $('#sys-last').textContent = trial + (last ? `Last update: ${last}` : '');
  $('#sys-last').className = d.last && !d.last.ok ? 'bad' : '';
}

async function switchSlot(s) {
  if (!window.confirm(`Make ${s.version} (slot ${s.slot.toUpperCase()}) the system that boots, and reboot into it now?`)) return;
  const r = await api('POST', '/api/update/switch', { slot: s.slot });
  notice(r.ok ? `${r.data.message}. Reload this page when the box is back.` : r.data.error, !r.ok);
}

// The bundle goes up as the request body, straight from the file (XMLHttpRequest: fetch
// reports no upload progress); the box writes it to the other slot as it arrives.
function update() {
  const f = $('#update-file').files[0];
  if (!f) { notice('Choose an update bundle first.', true); return; }
  const bar = $('#update-progress');
  const text = $('#update-text');
  bar.hidden = false; bar.value = 0;
  $('#update-go').disabled = true;
  const x = new XMLHttpRequest();
  x.open('POST', '/api/update');
  x.setRequestHeader('X-CSRF-Token', csrf);
  x.setRequestHeader('Content-Type', 'application/octet-stream');
  x.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    bar.value = Math.floor((100 * e.loaded) / e.total);
    text.textContent = `${fmt(e.loaded)}B of ${fmt(e.total)}B sent`;
  };
  x.upload.onload = () => { text.textContent = 'sent; the box checks what it wrote...'; };
  x.onloadend = () => {
    $('#update-go').disabled = false;
    let d = {};
    try { d = JSON.parse(x.responseText); } catch (_) { /* no answer */ }
    if (x.status === 200) {
      bar.value = 100;
      text.textContent = d.message;
      notice(`${d.message}. Reload this page when the box is back.`);
    } else {
      bar.hidden = true;
      text.textContent = '';
      notice(d.error || `the upload failed (${x.status || 'no answer'})`, true);
      loadSystem();
    }
  };
  x.send(f);
}

async function power(what) {
  if (!window.confirm(`${what === 'reboot' ? 'Reboot' : 'Power off'} the director now? Forwarding stops until it is back.`)) return;
  const r = await api('POST', `/api/${what}`);
  notice(r.ok ? `${r.data.message}. Reload this page when the box is back.` : r.data.error, !r.ok);
}

// ---- start ----------------------------------------------------------------
async function enter() {
  show('main');
  tab('status');
  refresh();
  timer = setInterval(refresh, 2000);
}

async function start() {
  const r = await api('GET', '/api/session');
  if (r.data.logged_in) { csrf = r.data.csrf; enter(); } else show(r.data.setup_needed ? 'setup' : 'login');
}

document.addEventListener('DOMContentLoaded', () => {
  $('#setup-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors($('#setup-form'));
    const r = await api('POST', '/api/setup', { code: $('#setup-code').value, password: $('#setup-password').value });
    if (r.ok) { csrf = r.data.csrf; notice('Password set.'); enter(); } else if (!r.data.field || !fieldError($('#setup-form'), r.data.field, r.data.error)) notice(r.data.error, true);
  });
  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors($('#login-form'));
    const r = await api('POST', '/api/login', { password: $('#login-password').value });
    if (r.ok) { csrf = r.data.csrf; notice(''); enter(); } else if (r.status === 429 || !fieldError($('#login-form'), 'password', r.data.error)) notice(r.data.error, true);
  });
  $('#logout').addEventListener('click', async () => { await api('POST', '/api/logout'); csrf = null; show('login'); });
  document.querySelectorAll('nav button').forEach((b) => b.addEventListener('click', () => tab(b.dataset.tab)));
  $('#confirm').addEventListener('click', async () => { const r = await api('POST', '/api/config/confirm'); notice(r.ok ? r.data.message : r.data.error, !r.ok); refresh(); });
  $('#cfg-ha-on').addEventListener('change', () => { $('#cfg-ha-fields').hidden = !$('#cfg-ha-on').checked; });
  $('#cfg-syslog-on').addEventListener('change', () => { $('#cfg-syslog-fields').hidden = !$('#cfg-syslog-on').checked; });
  $('#cfg-metrics-new').addEventListener('click', () => {
    const b = new Uint8Array(24);
    crypto.getRandomValues(b);
    $('#cfg-metrics-token').value = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    notice('A new metrics token is in the form: press Save and apply, then give it to Prometheus (the old one stops working).');
  });
  $('#conn-show').addEventListener('click', loadConnections);
  $('#events-kind').addEventListener('change', loadEvents);
  $('#capture-form').addEventListener('submit', (ev) => { ev.preventDefault(); capture(); });
  $('#events-text').addEventListener('input', loadEvents);
  $('#events-download').addEventListener('click', () => { const k = $('#events-kind').value; download(`/api/events?format=text${k ? '&kind=' + encodeURIComponent(k) : ''}`, 'director-events.txt'); });
  $('#add-service').addEventListener('click', () => { readForm(); config.services.push({ vip: '', protocol: 'tcp', port: 80, scheduler: 'rr', persistence_s: 0, real_servers: [{ address: '', weight: 1 }] }); drawServices(); });
  $('#config-form').addEventListener('submit', async (ev) => { ev.preventDefault(); readForm(); await saveConfig(config); });
  $('#export-json').addEventListener('click', () => download('/api/config/export?format=json', 'director.json'));
  $('#export-ipvsadm').addEventListener('click', () => download('/api/config/export?format=ipvsadm', 'ipvsadm.rules'));
  $('#import-json').addEventListener('change', async (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    let doc;
    try { doc = JSON.parse(await f.text()); } catch (e) { notice(`${f.name} is not JSON: ${e.message}`, true); return; }
    if (await saveConfig(doc)) loadConfig();
  });
  $('#import-ipvsadm-go').addEventListener('click', () => importServices('/api/config/import-ipvsadm', $('#import-ipvsadm').value, 'ipvsadm rules'));
  $('#import-keepalived-go').addEventListener('click', () => importServices('/api/config/import-keepalived', $('#import-keepalived').value, 'keepalived.conf'));
  $('#password-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors($('#password-form'));
    const r = await api('POST', '/api/password', { current: $('#pw-current').value, new: $('#pw-new').value });
    if (r.ok) { csrf = null; notice(r.data.message); show('login'); } else if (!fieldError($('#password-form'), r.data.field || '', r.data.error)) notice(r.data.error, true);
  });
  $('#update-go').addEventListener('click', update);
  $('#reboot').addEventListener('click', () => power('reboot'));
  $('#poweroff').addEventListener('click', () => power('poweroff'));
  start();
});
