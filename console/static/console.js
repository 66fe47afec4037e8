// taskledger operator console. Plain JavaScript over the JSON API: no
// framework, no build step. Everything shown is built with textContent, so
// stored bodies and headers are never interpreted as markup.
'use strict';

const TOKEN_KEY = 'taskledger.adminToken';
const REFRESH_MS = 3000;        // overview refresh
const REBUILD_REFRESH_MS = 500; // while a rebuild runs

const $ = (id) => document.getElementById(id);

// el builds an element: el('td', {class: 'num', text: '3'}, child, …).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

function show(node, visible) { node.hidden = !visible; }

function showError(node, err) {
  node.textContent = err ? err.message : '';
  show(node, Boolean(err));
}

const numberFormat = new Intl.NumberFormat();
const fmtNumber = (n) => (n === undefined || n === null ? '—' : numberFormat.format(n));

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function fmtSeconds(s) {
  if (s === undefined || s === null) return '—';
  if (s < 1) return s === 0 ? '0' : s.toFixed(2);
  if (s < 120) return s.toFixed(1);
  return numberFormat.format(Math.round(s));
}

// ---- the API ---------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (t) => { sessionStorage.setItem(TOKEN_KEY, t); renderAuth(); },
  clear: () => { sessionStorage.removeItem(TOKEN_KEY); renderAuth(); },
};

// describe turns an error answer into a sentence an operator can act on.
function describe(status, error) {
  const message = (error && error.message) || '';
  const code = error && error.code;
  if (status === 401) return 'The admin token is missing or was refused. ' + message;
  if (code === 'admin_disabled') return 'Admin actions are turned off on this server: start it with TASKLEDGER_ADMIN_TOKEN set.';
  if (status >= 500) return 'The service could not answer (' + status + '): ' + (message || 'see its log') + '.';
  return message || 'The service answered ' + status + '.';
}

// api sends a request and returns the decoded JSON answer; it throws an
// ApiError whose message is fit to show.
async function api(method, path) {
  const headers = { Accept: 'application/json' };
  const t = token.get();
  if (t) headers.Authorization = 'Bearer ' + t;
  let resp;
  try {
    resp = await fetch(path, { method, headers, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'Cannot reach the service: is it running? (' + e.message + ')');
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!resp.ok) {
    const error = body && body.error;
    throw new ApiError(resp.status, (error && error.code) || 'http_' + resp.status, describe(resp.status, error));
  }
  return body;
}

// admin runs an admin request, asking for the token first when there is
// none, and once more when the server refuses it.
async function admin(method, path) {
  if (!token.get() && !(await askToken())) {
    throw new ApiError(0, 'no_token', 'Not done: an admin token is needed.');
  }
  try {
    return await api(method, path);
  } catch (e) {
    if (e.status !== 401) throw e;
    token.clear();
    if (!(await askToken('The server refused that token. Enter it again.'))) throw e;
    return api(method, path);
  }
}

// askToken opens the sign-in dialog; it resolves true once a token is set.
function askToken(why) {
  const dialog = $('token-dialog');
  $('token-why').textContent = why || '';
  show($('token-why'), Boolean(why));
  $('token-input').value = '';
  return new Promise((resolve) => {
    const done = (ok) => {
      $('token-form').removeEventListener('submit', onSubmit);
      $('token-cancel').removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      resolve(ok);
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      const value = $('token-input').value.trim();
      if (!value) return;
      token.set(value);
      done(true);
    };
    const onCancel = (ev) => { ev.preventDefault(); done(false); };
    $('token-form').addEventListener('submit', onSubmit);
    $('token-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    $('token-input').focus();
  });
}

function renderAuth() {
  const signedIn = Boolean(token.get());
  $('auth-state').textContent = signedIn ? 'Signed in (admin)' : 'Not signed in';
  show($('sign-in'), !signedIn);
  show($('sign-out'), signedIn);
}

function flash(message) {
  $('flash').textContent = message;
  show($('flash'), true);
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => show($('flash'), false), 5000);
}

// ---- views and navigation --------------------------------------------------

const views = ['overview', 'dead-letters', 'events', 'task'];
let currentView = '';

function route() {
  const [view, ...rest] = location.hash.replace(/^#/, '').split('/');
  const name = views.includes(view) ? view : 'overview';
  currentView = name;
  for (const v of views) show($('view-' + v), v === name);
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (name === 'overview') refreshOverview();
  if (name === 'dead-letters') loadDeadLetters();
  if (name === 'task' && rest.length) {
    const id = decodeURIComponent(rest.join('/'));
    if (id !== shownTask) {
      $('task-id').value = id;
      lookUpTask(id);
    }
  }
}

// ---- overview: projections and ingest --------------------------------------

// rebuilds tracks the rebuilds started from this page, by projection:
// {prev: the latest rebuild's started_at before this one, startedAt: this
// one's, once GET /v1/projections lists it}. The outcome shown is always
// the API's; the entry only says the latest rebuild is the page's own, and
// is dropped once a rebuild started elsewhere is the latest.
const rebuilds = new Map();
// lastStarted is the started_at of each projection's latest rebuild, as
// last shown.
const lastStarted = new Map();
let overviewTimer = 0;

async function refreshOverview() {
  clearTimeout(overviewTimer);
  if (currentView !== 'overview') return;
  const running = await Promise.all([loadProjections(), loadIngest()]).then(([r]) => r);
  if (currentView === 'overview') {
    overviewTimer = setTimeout(refreshOverview, running ? REBUILD_REFRESH_MS : REFRESH_MS);
  }
}

// loadProjections renders GET /v1/projections; it reports whether a
// rebuild is running or awaited.
async function loadProjections() {
  let body;
  try {
    body = await api('GET', '/v1/projections');
  } catch (e) {
    showError($('projections-error'), e);
    return false;
  }
  showError($('projections-error'), null);
  $('projections-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  const tbody = $('projections').tBodies[0];
  const rows = body.projections.map((p) => {
    const tr = tbody.querySelector('tr[data-projection="' + CSS.escape(p.name) + '"]') || newProjectionRow(p.name);
    updateProjectionRow(tr, p);
    return tr;
  });
  // Rows are updated in place, so a button is never replaced under the pointer.
  if (rows.some((tr, i) => tbody.rows[i] !== tr) || tbody.rows.length !== rows.length) tbody.replaceChildren(...rows);
  return body.projections.some((p) => p.state === 'rebuilding') ||
    [...rebuilds.values()].some((r) => !r.startedAt);
}

function newProjectionRow(name) {
  return el('tr', { dataset: { projection: name } },
    el('td', { class: 'mono', text: name }), el('td'), el('td', { class: 'num' }), el('td', { class: 'num' }),
    el('td', { class: 'num' }), el('td', { class: 'num' }), el('td'), el('td', { class: 'rebuild' }));
}

function updateProjectionRow(tr, p) {
  const started = p.rebuild ? p.rebuild.started_at : '';
  lastStarted.set(p.name, started);
  let rb = rebuilds.get(p.name);
  if (rb && !rb.startedAt && started !== rb.prev) rb.startedAt = started;
  if (rb && rb.startedAt && started !== rb.startedAt) {
    rebuilds.delete(p.name); // a later rebuild, started elsewhere
    rb = undefined;
  }
  const cells = tr.cells;
  const parts = (p.partitions || []).length;
  cells[0].replaceChildren(p.name);
  if (parts > 1) cells[0].append(el('div', { class: 'muted', text: parts + ' partitions, ' + p.partitions.filter((x) => x.active).length + ' active' }));
  cells[1].textContent = p.policy || '—';
  cells[2].textContent = fmtNumber(p.checkpoint);
  cells[3].textContent = fmtNumber(p.stream_last_seq);
  cells[4].textContent = fmtNumber(p.lag);
  cells[5].textContent = fmtSeconds(p.lag_seconds);
  cells[6].replaceChildren(el('span', { class: 'badge ' + p.state, text: p.state }));
  if (p.reason) cells[6].append(el('div', { class: 'muted', text: p.reason }));
  if (p.dead_letters) {
    cells[6].append(el('div', {}, el('a', { href: '#dead-letters', text: fmtNumber(p.dead_letters) + ' dead letter' + (p.dead_letters === 1 ? '' : 's') })));
  }
  updateRebuildCell(cells[7], p, rb);
}

function progressBar(percent, label, kind) {
  const fill = el('div', { class: 'fill' });
  fill.style.width = Math.max(0, Math.min(100, percent)) + '%';
  return el('div', {
    class: 'progress ' + (kind || ''), role: 'progressbar',
    'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(Math.round(percent)),
  }, el('div', { class: 'bar' }, fill), el('span', { class: 'label', text: label }));
}

// updateRebuildCell shows a running rebuild's progress, the outcome of the
// latest rebuild as a bar when this page started it, and the button; an
// existing button is kept.
function updateRebuildCell(cell, p, rb) {
  let progress = null;
  if (p.state === 'rebuilding' && p.rebuild) {
    const r = p.rebuild;
    progress = progressBar(r.percent, fmtNumber(r.applied_seq) + ' / ' + fmtNumber(r.target_seq) + ' (' + r.percent + '%)');
  } else if (p.state === 'rebuilding') {
    progress = progressBar(0, 'starting…');
  } else if (rb && rb.startedAt && rebuildFailed(p.rebuild)) {
    progress = progressBar(100, 'failed: ' + (p.rebuild.error || 'the rebuild was ' + p.rebuild.outcome), 'failed');
  } else if (rb && rb.startedAt) {
    progress = progressBar(100, 'done', 'done');
  } else if (p.rebuild) {
    progress = lastRebuild(p.rebuild);
  }
  let button = cell.querySelector('button');
  if (!button) {
    button = el('button', { type: 'button', class: 'secondary', text: 'Rebuild', onclick: () => startRebuild(p.name, button) });
  }
  show(button, p.state !== 'rebuilding');
  const old = cell.querySelector('.progress, .last-rebuild');
  if (old && progress) old.replaceWith(progress);
  else if (old) old.remove();
  else if (progress) cell.prepend(progress);
  if (!button.isConnected) cell.append(button);
}

function rebuildFailed(r) {
  return r.outcome === 'failed' || r.outcome === 'interrupted';
}

// lastRebuild tells how the latest rebuild, started anywhere, ended.
function lastRebuild(r) {
  const failed = rebuildFailed(r);
  const when = fmtTime(r.finished_at || r.failed_at || r.updated_at);
  return el('div', { class: 'last-rebuild muted' + (failed ? ' failed' : '') },
    'last rebuild ' + r.outcome + ' ' + when + (r.error ? ': ' + r.error : ''));
}

async function startRebuild(name, button) {
  button.disabled = true;
  const prev = lastStarted.get(name) || ''; // before any refresh can list this one
  try {
    await admin('POST', '/v1/projections/' + encodeURIComponent(name) + '/rebuild');
    rebuilds.set(name, { prev, startedAt: '' });
    flash('Rebuild of ' + name + ' started.');
  } catch (e) {
    showError($('projections-error'), e);
  } finally {
    button.disabled = false;
    refreshOverview();
  }
}

const outcomes = [
  ['accepted', 'accepted', 'new events stored'],
  ['duplicate', 'duplicates', 're-sends of stored events'],
  ['rejected', 'rejected', 'refused as invalid (4xx)'],
  ['unavailable', 'unavailable', 'asked to retry (429/503)'],
];

async function loadIngest() {
  let body;
  try {
    body = await api('GET', '/v1/ingest/summary');
  } catch (e) {
    showError($('ingest-error'), e);
    return;
  }
  showError($('ingest-error'), null);
  const w = body.windows.find((x) => x.window_seconds === 300) || body.windows[0];
  const minute = body.windows.find((x) => x.window_seconds === 60);
  const covered = Math.round(w.covered_seconds);
  $('ingest-window').textContent = covered < w.window_seconds
    ? 'since this replica started ' + covered + ' s ago'
    : 'last ' + w.window_seconds / 60 + ' minutes, this replica';
  $('ingest').replaceChildren(...outcomes.map(([key, label, what]) => el('div', { class: 'card ' + key + (w[key] ? '' : ' zero'), dataset: { outcome: key } },
    el('div', { class: 'value', text: fmtNumber(w[key]) }),
    el('div', {}, label),
    el('div', { class: 'what', text: what + (minute ? '; ' + fmtNumber(minute[key]) + ' in the last minute' : '') }))));
}

// ---- dead letters -----------------------------------------------------------

let deadLetters = [];
let selectedDead = null;

async function loadDeadLetters() {
  const resolved = $('dead-resolved').checked;
  let body;
  try {
    body = await api('GET', '/v1/dead-letters' + (resolved ? '?include_resolved=true' : ''));
  } catch (e) {
    if (e.status === 401 && !token.get()) {
      e.message = 'Dead letters hold raw bodies and headers: sign in with the admin token to see them.';
    }
    showError($('dead-error'), e);
    show($('dead-letters'), false);
    show($('dead-empty'), false);
    return;
  }
  showError($('dead-error'), null);
  deadLetters = body.dead_letters;
  show($('dead-empty'), deadLetters.length === 0);
  show($('dead-letters'), deadLetters.length > 0);
  $('dead-letters').tBodies[0].replaceChildren(...deadLetters.map((d) => el('tr', {
    class: 'clickable' + (selectedDead === d.id ? ' selected' : ''), tabindex: '0', dataset: { id: String(d.id) },
    onclick: () => showDeadLetter(d.id),
    onkeydown: (ev) => { if (ev.key === 'Enter') showDeadLetter(d.id); },
  },
  el('td', { class: 'num', text: String(d.id) }),
  el('td', { class: 'mono', text: d.projection }),
  el('td', { class: 'num', text: fmtNumber(d.stream_seq) }),
  el('td', { class: 'reason', text: d.reason }),
  el('td', { class: 'num', text: String(d.attempts) }),
  el('td', { text: fmtTime(d.created_at) }),
  el('td', { text: fmtTime(d.last_attempt_at) }),
  el('td', {}, d.resolved_at ? el('span', { class: 'badge resolved', text: fmtTime(d.resolved_at) }) : 'no'))));
  if (selectedDead !== null) {
    const d = deadLetters.find((x) => x.id === selectedDead);
    if (d) renderDeadLetter(d, false);
  }
}

function showDeadLetter(id) {
  selectedDead = id;
  const d = deadLetters.find((x) => x.id === id);
  if (!d) return;
  for (const row of $('dead-letters').tBodies[0].rows) row.classList.toggle('selected', row.dataset.id === String(id));
  renderDeadLetter(d, true);
}

function renderDeadLetter(d, fresh) {
  $('dead-detail-title').textContent = 'Dead letter ' + d.id + ' · ' + d.projection + ' · seq ' + d.stream_seq;
  $('dead-detail-facts').replaceChildren(
    el('dt', { text: 'Reason' }), el('dd', { text: d.reason }),
    el('dt', { text: 'Subject' }), el('dd', { class: 'mono', text: d.subject }),
    el('dt', { text: 'Attempts' }), el('dd', { text: String(d.attempts) }),
    el('dt', { text: 'First failed' }), el('dd', { text: fmtTime(d.created_at) }),
    el('dt', { text: 'Last attempt' }), el('dd', { text: fmtTime(d.last_attempt_at) }),
    el('dt', { text: 'Resolved' }), el('dd', { text: d.resolved_at ? fmtTime(d.resolved_at) : 'no' }));
  $('dead-detail-body').textContent = typeof d.body === 'string' ? d.body : JSON.stringify(d.body, null, 2);
  $('dead-detail-headers').textContent = formatHeaders(d.headers);
  $('dead-retry').disabled = Boolean(d.resolved_at);
  if (fresh) show($('dead-retry-result'), false);
  show($('dead-detail'), true);
}

async function retryDeadLetter() {
  const id = selectedDead;
  const result = $('dead-retry-result');
  $('dead-retry').disabled = true;
  try {
    await admin('POST', '/v1/dead-letters/' + id + '/retry');
    result.className = 'flash';
    result.textContent = 'Dead letter ' + id + ' applied: it is resolved.';
  } catch (e) {
    result.className = 'error';
    result.textContent = e.code === 'still_failing'
      ? 'Dead letter ' + id + ' still fails: ' + e.message
      : 'Retry of dead letter ' + id + ' not done: ' + e.message;
  }
  show(result, true);
  await loadDeadLetters();
}

function formatHeaders(headers) {
  const names = Object.keys(headers || {}).sort();
  if (!names.length) return '(none)';
  return names.map((n) => headers[n].map((v) => n + ': ' + v).join('\n')).join('\n');
}

// ---- events: search and timeline ---------------------------------------------

function prettyBody(body) {
  try { return JSON.stringify(JSON.parse(body), null, 2); } catch { return body; }
}

function signatureText(sig) {
  if (!sig) return 'not recorded';
  if (sig.scheme === 'none') return 'unsigned source';
  return sig.scheme + (sig.secret !== undefined ? ', secret #' + sig.secret : '');
}

// eventCard shows one stored event with its raw body and headers.
function eventCard(e, tag, withTask) {
  const raw = el('details', { class: 'raw-body' }, el('summary', { text: 'Raw body as received (' + e.body.length + ' bytes)' }),
    el('pre', { class: 'raw', text: e.body }));
  const pretty = el('pre', { class: 'raw', text: prettyBody(e.body) });
  const headers = el('details', {}, el('summary', { text: 'Stored headers' }), el('pre', { class: 'raw', text: formatHeaders(e.headers) }));
  return el(tag, { class: 'event-card', dataset: { seq: String(e.stream_seq) } },
    el('div', { class: 'event-head' },
      el('span', { class: 'badge plain', text: 'seq ' + e.stream_seq }),
      el('span', { class: 'type', text: e.event }),
      el('span', { class: 'muted', text: 'from ' + e.source }),
      el('span', { class: 'muted', text: 'received ' + fmtTime(e.received_at) }),
      withTask ? el('a', { href: '#task/' + encodeURIComponent(e.task_id), text: 'task ' + e.task_id }) : null),
    el('dl', { class: 'facts' },
      el('dt', { text: 'Dedup key' }), el('dd', { class: 'mono', text: e.dedup_key }),
      e.event_id ? [el('dt', { text: 'event_id' }), el('dd', { class: 'mono', text: e.event_id })] : null,
      e.external_id ? [el('dt', { text: 'external_id' }), el('dd', { class: 'mono', text: e.external_id })] : null,
      el('dt', { text: 'Signature' }), el('dd', { text: signatureText(e.signature) })),
    pretty, raw, headers);
}

async function searchEvents(ev) {
  ev.preventDefault();
  const field = $('event-field').value;
  const value = $('event-value').value.trim();
  const results = $('event-results');
  results.replaceChildren();
  show($('event-empty'), false);
  if (!value) return;
  try {
    const body = await api('GET', '/v1/events?' + new URLSearchParams({ [field]: value }));
    showError($('event-error'), null);
    if (!body.events.length) {
      $('event-empty').textContent = 'No stored event has ' + field + ' "' + value + '".';
      show($('event-empty'), true);
      return;
    }
    results.replaceChildren(...body.events.map((e) => eventCard(e, 'div', true)));
  } catch (e) {
    showError($('event-error'), e);
  }
}

let shownTask = null;
let timelineCursor = '';

async function lookUpTask(id) {
  shownTask = id;
  const result = $('task-result');
  showError($('task-error'), null);
  show(result, false);
  const policies = ['all', 'first', 'latest'];
  const histories = await Promise.all(policies.map((p) =>
    api('GET', '/v1/tasks/' + encodeURIComponent(id) + '/completions?policy=' + p).catch((e) => e)));
  let timeline;
  try {
    timeline = await api('GET', '/v1/tasks/' + encodeURIComponent(id) + '/events?limit=50');
  } catch (e) {
    timeline = e;
  }
  if (shownTask !== id) return; // another lookup started meanwhile
  const failed = [...histories, timeline].find((r) => r instanceof ApiError && r.status !== 404);
  if (failed) {
    showError($('task-error'), failed);
    return;
  }
  if (timeline instanceof ApiError && histories.every((h) => h instanceof ApiError)) {
    showError($('task-error'), new Error('No event is stored for task "' + id + '".'));
    return;
  }
  const known = histories.find((h) => !(h instanceof ApiError));
  $('task-reopened').replaceChildren(known && known.reopened
    ? el('span', { class: 'badge reopened', text: 'reopened' + (known.reopened_at ? ' at ' + fmtTime(known.reopened_at) : '') + ' after its latest completion' })
    : el('span', { class: 'badge live', text: known ? 'not reopened' : 'never completed' }));
  $('task-policies').replaceChildren(...policies.map((p, i) => policyColumn(p, histories[i])));
  const list = $('timeline');
  list.replaceChildren();
  timelineCursor = '';
  if (timeline instanceof ApiError) {
    show($('timeline-empty'), true);
    show($('timeline-more'), false);
  } else {
    show($('timeline-empty'), false);
    appendTimeline(timeline);
  }
  show(result, true);
}

function policyColumn(policy, h) {
  const head = el('h3', { text: policy });
  if (h instanceof ApiError) {
    return el('section', { class: 'policy', dataset: { policy } }, head, el('p', { class: 'muted', text: 'No completion.' }));
  }
  return el('section', { class: 'policy', dataset: { policy } }, head,
    el('ul', {}, h.completions.map((c) => el('li', {},
      el('div', { text: fmtTime(c.completed_at) }),
      el('div', { class: 'muted', text: (c.completed_by || 'unknown user') + ' · seq ' + c.stream_seq })))));
}

function appendTimeline(page) {
  $('timeline').append(...page.events.map((e) => eventCard(e, 'li', false)));
  timelineCursor = page.next_cursor || '';
  show($('timeline-more'), Boolean(timelineCursor));
}

async function moreTimeline() {
  const id = shownTask;
  try {
    const page = await api('GET', '/v1/tasks/' + encodeURIComponent(id) + '/events?limit=50&cursor=' + encodeURIComponent(timelineCursor));
    if (shownTask === id) appendTimeline(page);
  } catch (e) {
    showError($('task-error'), e);
  }
}

// ---- wiring -------------------------------------------------------------------

function start() {
  renderAuth();
  $('sign-in').addEventListener('click', () => askToken().then((ok) => { if (ok) route(); }));
  $('sign-out').addEventListener('click', () => { token.clear(); flash('Signed out: the token is forgotten.'); route(); });
  $('dead-refresh').addEventListener('click', loadDeadLetters);
  $('dead-resolved').addEventListener('change', loadDeadLetters);
  $('dead-retry').addEventListener('click', retryDeadLetter);
  $('dead-close').addEventListener('click', () => { selectedDead = null; show($('dead-detail'), false); loadDeadLetters(); });
  $('event-search').addEventListener('submit', searchEvents);
  $('task-search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = $('task-id').value.trim();
    if (!id) return;
    const hash = '#task/' + encodeURIComponent(id);
    if (location.hash === hash) lookUpTask(id);
    else location.hash = hash;
  });
  $('timeline-more').addEventListener('click', moreTimeline);
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) route(); });
  route();
}

start();
