// The dashboard: signs in with a bearer token, reads the projection's HTTP/JSON answers (the
// gRPC messages' proto3 JSON mapping: lowerCamelCase, int64 as strings, zero values left out),
// and refetches when the projection tells it (GET /v1/stream) that an apply was committed.
// The view (period, slice, language, wall layout) lives in the URL; the token never does.

import * as api from './api.js';
import * as f from './format.js';
import { words, fill } from './i18n.js';

const DRILL = ['level', 'agency', 'sector', 'procedure'];
const FILTER_PARAM = {
  level: 'level', agency: 'agency_code', sector: 'sector_code', procedure: 'procedure_code',
};
const FORMS = ['ii06a', 'bieu-mau-3-section-3', 'bieu-mau-7-section-6', 'scorecard-766'];
// Refetch at most once per this many ms, however many notices arrive.
const THROTTLE_MS = 1000;
// Refetch this often without a notice too (another instance may have applied).
const POLL_MS = 60_000;

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return el;
}

// ----- the view's state, read from and written to the URL -----

function monthOf(iso) {
  const { y, m } = f.parseYmd(iso);
  return { from: f.ymd(y, m, 1), to: f.ymd(y, m + 1, 1) };
}

function readState() {
  const p = new URLSearchParams(location.search);
  const month = monthOf(f.today());
  const path = [];
  for (const dim of DRILL) {
    const v = p.get(dim);
    if (!v) break;
    path.push({ dim, value: v });
  }
  return {
    from: p.get('from') ?? month.from,
    to: p.get('to') ?? month.to,
    channel: p.get('channel') ?? '',
    path,
    asRecordedAt: null,
    form: FORMS.includes(p.get('form')) ? p.get('form') : FORMS[0],
    lang: p.get('lang') === 'en' ? 'en' : 'vi',
    wall: p.has('wall'),
  };
}

let state = readState();
let me = null;
let config = { warningsUrl: null };

function writeUrl() {
  const p = new URLSearchParams();
  p.set('from', state.from);
  p.set('to', state.to);
  if (state.channel) p.set('channel', state.channel);
  for (const { dim, value } of state.path) p.set(dim, value);
  if (state.form !== FORMS[0]) p.set('form', state.form);
  if (state.lang !== 'vi') p.set('lang', state.lang);
  if (state.wall) p.set('wall', '');
  history.replaceState(null, '', `${location.pathname}?${p.toString().replace(/wall=(&|$)/, 'wall$1')}`);
}

const t = () => words[state.lang];

// The API parameters of the current period and slice.
function scope(extra = {}) {
  const params = { from: state.from, to: state.to, channel: state.channel };
  for (const { dim, value } of state.path) params[FILTER_PARAM[dim]] = value;
  if (state.asRecordedAt) params.as_recorded_at = state.asRecordedAt;
  return { ...params, ...extra };
}

// ----- rendering -----

function applyWords() {
  document.documentElement.lang = state.lang;
  document.title = t().title;
  for (const el of document.querySelectorAll('[data-t]')) el.textContent = t()[el.dataset.t];
  for (const opt of $('channel').options) {
    if (opt.value) opt.textContent = t().channels[opt.value];
  }
  $('lang').textContent = t().lang;
}

function valueName(dim, value) {
  if (dim === 'level') return t().levels[value] ?? value;
  if (dim === 'channel') return t().channels[value] ?? value;
  return value;
}

function rateCell(rate) {
  return h('td', { title: f.fraction(state.lang, rate) },
    f.percent(state.lang, rate), h('small', {}, `(${f.fraction(state.lang, rate)})`));
}

function kpi(id, label, value, { rate, sub, met } = {}) {
  const cls = met === true ? 'kpi met' : met === false ? 'kpi unmet' : 'kpi';
  return h('div', { class: cls, id: `kpi-${id}`, title: rate ? f.fraction(state.lang, rate) : null },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value' }, value),
    rate ? h('div', { class: 'fraction' }, f.fraction(state.lang, rate)) : null,
    sub ? h('div', { class: 'sub' }, sub) : null);
}

function renderIndicators(answer) {
  const i = answer.total ?? {};
  const L = state.lang;
  const k = t().k;
  const n = (v) => f.count(L, v);
  const met = Object.fromEntries((answer.targets ?? []).map((c) => [c.id, c.met]));
  const pending = i.pending ?? {};
  const rateKpi = (id, rate, target, sub) => kpi(id, k[id], f.percent(L, rate),
    { rate: rate ?? {}, met: target ? met[target] : undefined, sub });
  $('kpis').replaceChildren(
    kpi('S1', k.S1, n(i.received), {
      sub: fill(k.S1sub, {
        online: n(i.receivedOnline),
        direct: n(int(i.receivedDirect) + int(i.receivedPostal)),
        carried: n(i.carriedOver),
      }),
    }),
    kpi('S2', k.S2, n(i.resolved), {
      sub: fill(k.S2sub, { early: n(i.resolvedEarly), onTime: n(i.resolvedOnTime), late: n(i.resolvedLate) }),
    }),
    rateKpi('S3', i.onTimeRate, 'on_time'),
    kpi('S4', k.S4, n(pending.total), {
      sub: fill(k.S4sub, { within: n(pending.withinTime), overdue: n(pending.overdue) }),
    }),
    kpi('S5', k.S5, n(i.resolvedLate)),
    rateKpi('S6', i.apologyRate, 'apology'),
    rateKpi('S6t', i.timelyApologyRate, 'timely_apology'),
    rateKpi('S7', i.componentsDigitized, 'components_digitized'),
    rateKpi('S8', i.resultsDigitized, 'results_digitized'),
    rateKpi('S9', i.dataReuse),
    rateKpi('S10', i.online, null, fill(k.S10sub, {
      full: f.percent(L, i.onlineFullOnline), partial: f.percent(L, i.onlinePartialOnline),
    })),
    rateKpi('S11', i.onlinePayment, 'online_payment', fill(k.S11sub, {
      tx: n(i.paymentTransactions), amount: n(i.paymentAmountVnd),
    })),
    rateKpi('S12', i.satisfaction, 'satisfaction'),
    rateKpi('S13', i.electronicTransfer),
  );
  $('targets').replaceChildren(
    h('tr', {}, h('th', {}, 'S14'), h('th', {}, '%'), h('th', {}, t().target), h('th', {}, '')),
    ...(answer.targets ?? []).map((c) => h('tr', { dataset: { target: c.id } },
      h('td', {}, t().targetNames[c.id] ?? c.id),
      rateCell(c.rate),
      h('td', {}, `≥ ${f.count(L, c.target)}%`),
      h('td', { class: c.met === true ? 'met' : c.met === false ? 'unmet' : '' },
        c.met === true ? t().met : c.met === false ? t().notMet : '—'))),
  );
  const notCounted = int(answer.dossiersNotCounted);
  const banner = [];
  if (answer.asRecordedAt) banner.push(`${t().asRecordedBanner} ${f.instant(answer.asRecordedAt)}`);
  if (notCounted > 0) banner.push(`${n(notCounted)} ${t().notCounted}`);
  $('banner').textContent = banner.join(' · ');
  $('banner').hidden = banner.length === 0;
}

const int = f.int;

function groupRows(answer) {
  return (answer.groups ?? []).map((g) => ({ value: g.key?.[0]?.value ?? '', i: g.indicators ?? {}, g }));
}

function renderDrill(answer, dim) {
  $('drill-dim').textContent = dim ? t()[dim] : '—';
  const table = $('drill');
  if (!dim) {
    table.replaceChildren();
    return;
  }
  const L = state.lang;
  const rows = groupRows(answer);
  table.replaceChildren(
    h('tr', {}, h('th', {}, t()[dim]), h('th', {}, t().received), h('th', {}, t().resolved),
      h('th', {}, t().onTimeRate), h('th', {}, t().late), h('th', {}, t().overdue)),
    ...rows.map(({ value, i }) => h('tr', { dataset: { value } },
      h('td', {}, h('button', {
        type: 'button', class: 'drill-link', dataset: { value },
        onclick: () => drillInto(dim, value),
      }, valueName(dim, value))),
      h('td', { class: 'received' }, f.count(L, i.received)),
      h('td', {}, f.count(L, i.resolved)),
      rateCell(i.onTimeRate),
      h('td', {}, f.count(L, i.resolvedLate)),
      h('td', {}, f.count(L, i.pending?.overdue)))),
  );
  if (rows.length === 0) table.append(h('tr', {}, h('td', { colspan: 6 }, t().none)));
}

function renderLate(tableId, answer, dim) {
  const L = state.lang;
  const rows = groupRows(answer)
    .filter(({ i }) => int(i.resolvedLate) > 0)
    .sort((a, b) => int(b.i.resolvedLate) - int(a.i.resolvedLate));
  $(tableId).replaceChildren(
    h('tr', {}, h('th', {}, t()[dim]), h('th', {}, t().late), h('th', {}, t().lateShare)),
    ...rows.map(({ value, i, g }) => h('tr', { dataset: { value } },
      h('td', {}, valueName(dim, value)),
      h('td', {}, f.count(L, i.resolvedLate)),
      rateCell(g.lateShare))),
  );
  if (rows.length === 0) $(tableId).append(h('tr', {}, h('td', { colspan: 3 }, t().none)));
}

function cellText(cell) {
  if (cell.count !== undefined) return [f.count(state.lang, cell.count), null];
  if (cell.rate !== undefined) return [f.percent(state.lang, cell.rate), f.fraction(state.lang, cell.rate)];
  return [cell.text ?? '', null];
}

function renderReport(report) {
  $('form-tabs').replaceChildren(...FORMS.map((form) => h('button', {
    type: 'button', role: 'tab', 'aria-selected': String(form === state.form),
    onclick: () => { state.form = form; writeUrl(); refresh(); },
  }, t().forms[form])));
  $('report-title').textContent = `${report.title ?? ''} — ${f.isoDate(state.from)}–${f.isoDate(f.addDays(state.to, -1))}`;
  $('report').replaceChildren(
    h('tr', {}, ...(report.columns ?? []).map((c) => h('th', { title: c.id }, c.label))),
    ...(report.rows ?? []).map((row) => h('tr', {}, ...(row.cells ?? []).map((cell) => {
      const [text, fraction] = cellText(cell);
      return h('td', { title: fraction }, text, fraction ? h('small', {}, `(${fraction})`) : null);
    }))),
  );
}

let chart = null;

function renderTrend(months, answers) {
  const L = state.lang;
  // x: the month's index (labels from `months`).
  const xs = months.map((_, i) => i);
  const pick = (fn) => answers.map((a) => fn(a.total ?? {}));
  const data = [
    xs,
    pick((i) => int(i.received)),
    pick((i) => int(i.resolved)),
    pick((i) => int(i.resolvedLate)),
    pick((i) => i.onTimeRate?.percent ?? null),
  ];
  const el = $('trend');
  el.dataset.months = months.map((m) => m.label).join(',');
  el.dataset.received = data[1].join(',');
  const width = Math.max(320, el.clientWidth - 8);
  const height = state.wall ? 420 : 300;
  if (chart) chart.destroy();
  el.replaceChildren();
  const count = (v) => (v === null ? '—' : f.count(L, v));
  chart = new uPlot({
    width,
    height,
    scales: { x: { time: false }, pct: { range: [0, 100] } },
    axes: [
      // One tick per month.
      { incrs: [1], values: (u, splits) => splits.map((s) => (Number.isInteger(s) ? months[s]?.label ?? '' : '')) },
      { values: (u, splits) => splits.map(count) },
      { scale: 'pct', side: 1, grid: { show: false }, values: (u, splits) => splits.map((s) => `${s}%`) },
    ],
    series: [
      { label: t().k.S1.split(' — ')[0], value: (u, v) => months[v]?.label ?? '' },
      { label: t().received, stroke: '#1565c0', width: 2, value: (u, v) => count(v) },
      { label: t().resolved, stroke: '#2e7d32', width: 2, value: (u, v) => count(v) },
      { label: t().late, stroke: '#c62828', width: 2, value: (u, v) => count(v) },
      {
        label: t().onTimeRate, stroke: '#6a1b9a', dash: [6, 4], width: 2, scale: 'pct',
        value: (u, v) => (v === null ? '—' : f.percent(L, { percent: v })),
      },
    ],
  }, data, el);
}

function renderCrumbs() {
  const parts = [h('button', { type: 'button', onclick: () => drillTo(0) }, t().province)];
  state.path.forEach(({ dim, value }, i) => {
    parts.push(h('span', { class: 'sep' }, '›'),
      h('button', { type: 'button', dataset: { dim }, onclick: () => drillTo(i + 1) },
        `${t()[dim]}: ${valueName(dim, value)}`));
  });
  $('crumbs').replaceChildren(...parts);
}

// Processing's `GET /v1/warnings`: ListDueSoonResponse in its proto3 JSON mapping,
// `{"warnings":[{"dossierId","agencyCode","holdingAgencyCode","dueAt","apologyDeadline",
// "warnFrom","raisedAt"}],"nextPageToken"}`, most urgent first (the page shows the first page).
function renderWarnings(answer) {
  const list = answer.warnings ?? [];
  $('warnings').replaceChildren(
    h('tr', {}, h('th', {}, t().dossier), h('th', {}, t().agency), h('th', {}, t().heldBy),
      h('th', {}, t().dueAt), h('th', {}, t().apologyDeadline)),
    ...list.map((w) => h('tr', { dataset: { dossier: w.dossierId } },
      h('td', {}, w.dossierId),
      h('td', {}, valueName('agency', w.agencyCode)),
      h('td', {}, valueName('agency', w.holdingAgencyCode)),
      h('td', {}, f.instant(w.dueAt)),
      h('td', {}, f.instant(w.apologyDeadline)))),
  );
  if (list.length === 0) $('warnings').append(h('tr', {}, h('td', { colspan: 5 }, t().noWarnings)));
}

// ----- fetching -----

const q = api.query;

async function fetchAll() {
  const dim = DRILL[state.path.length];
  const months = f.monthsEndingAt(state.to, 12);
  const byMonth = months.map((m) => api.getJson(`/v1/indicators?${q(scope({ from: m.from, to: m.to }))}`));
  const [indicators, drill, bySector, byAgency, report] = await Promise.all([
    api.getJson(`/v1/indicators?${q(scope())}`),
    dim ? api.getJson(`/v1/indicators?${q(scope({ group_by: dim }))}`) : null,
    api.getJson(`/v1/indicators?${q(scope({ group_by: 'sector' }))}`),
    api.getJson(`/v1/indicators?${q(scope({ group_by: 'agency' }))}`),
    api.getJson(`/v1/reports/${state.form}?${q(scope())}`),
  ]);
  renderCrumbs();
  renderIndicators(indicators);
  renderDrill(drill, dim);
  renderLate('late-sector', bySector, 'sector');
  renderLate('late-agency', byAgency, 'agency');
  renderReport(report);
  renderTrend(months, await Promise.all(byMonth));
  if (config.warningsUrl) await fetchWarnings();
}

async function fetchWarnings() {
  $('warnings-panel').hidden = false;
  try {
    const response = await fetch(config.warningsUrl, {
      headers: { Authorization: `Bearer ${api.token()}` }, cache: 'no-store',
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    renderWarnings(await response.json());
  } catch (e) {
    $('warnings').replaceChildren(h('tr', {}, h('td', {}, `${t().warningsUnavailable}: ${e.message}`)));
  }
}

let running = null;
let again = false;
let lastRun = 0;
let refreshes = 0;
let lastPosition = null;

// Refetches everything, at most once per THROTTLE_MS; calls during a refetch fold into one
// more afterwards.
function refresh() {
  if (running) {
    again = true;
    return running;
  }
  const wait = Math.max(0, lastRun + THROTTLE_MS - Date.now());
  running = (async () => {
    await new Promise((r) => setTimeout(r, wait));
    lastRun = Date.now();
    try {
      await fetchAll();
      $('error').textContent = '';
      refreshes++;
      document.body.dataset.refreshes = String(refreshes);
      if (lastPosition !== null) document.body.dataset.position = lastPosition;
      $('live').title = `${t().updated} ${f.instant(new Date())}`;
    } catch (e) {
      if (e.status === 401) {
        signOut();
        return;
      }
      $('error').textContent = e.field ? `${e.field}: ${e.message}` : e.message;
    } finally {
      running = null;
      if (again) {
        again = false;
        refresh();
      }
    }
  })();
  return running;
}

function drillInto(dim, value) {
  state.path.push({ dim, value });
  writeUrl();
  refresh();
}

function drillTo(depth) {
  state.path = state.path.slice(0, depth);
  writeUrl();
  refresh();
}

// ----- live notices -----

let listening = null;

function setLive(mode) {
  const el = $('live');
  el.className = `live ${mode === 'live' ? 'on' : 'off'}`;
  el.textContent = mode === 'live' ? t().live
    : mode === 'past' ? t().asRecorded : t().reconnecting;
}

function startListening() {
  stopListening();
  if (state.asRecordedAt) {
    setLive('past');
    return;
  }
  listening = new AbortController();
  api.listen(listening.signal, (position) => {
    lastPosition = position;
    refresh();
  }, (mode) => {
    if (mode === 'refused') signOut();
    else setLive(mode);
  });
}

function stopListening() {
  if (listening) listening.abort();
  listening = null;
}

setInterval(() => {
  if (me && !state.asRecordedAt) refresh();
}, POLL_MS);

// ----- sign-in and controls -----

async function showSignedIn() {
  try {
    me = await api.getJson('/v1/whoami');
  } catch (e) {
    if (e.status === 401) {
      api.setToken(null);
      $('signin-error').textContent = t().badToken;
      showSignIn();
      return;
    }
    throw e;
  }
  $('who').textContent = me.agency ? `${me.name} (${me.agency})` : me.name;
  $('signin').hidden = true;
  $('main').hidden = false;
  $('signout').hidden = false;
  $('as-recorded-field').hidden = !me.mayAskAsRecordedAt;
  fillControls();
  startListening();
  await refresh();
}

function showSignIn() {
  me = null;
  stopListening();
  $('main').hidden = true;
  $('signout').hidden = true;
  $('who').textContent = '';
  $('live').textContent = '';
  $('signin').hidden = false;
  $('token').focus();
}

function signOut() {
  api.setToken(null);
  showSignIn();
}

function fillControls() {
  $('from').value = f.isoDate(state.from);
  $('to').value = f.isoDate(f.addDays(state.to, -1));
  $('channel').value = state.channel;
}

function preset(kind) {
  const { y, m } = f.parseYmd(f.today());
  if (kind === 'month') Object.assign(state, monthOf(f.today()));
  if (kind === 'quarter') {
    const q0 = Math.floor((m - 1) / 3) * 3 + 1;
    Object.assign(state, { from: f.ymd(y, q0, 1), to: f.ymd(y, q0 + 3, 1) });
  }
  if (kind === 'year') Object.assign(state, { from: f.ymd(y, 1, 1), to: f.ymd(y + 1, 1, 1) });
  fillControls();
  writeUrl();
  refresh();
}

function onControls(event) {
  event.preventDefault();
  const from = f.readDate($('from').value);
  const last = f.readDate($('to').value);
  if (!from || !last) {
    $('controls-error').textContent = 'dd/mm/yyyy';
    return;
  }
  let asRecordedAt = null;
  if (me?.mayAskAsRecordedAt && $('as-recorded').value.trim()) {
    asRecordedAt = f.readInstant($('as-recorded').value);
    if (!asRecordedAt) {
      $('controls-error').textContent = 'dd/mm/yyyy HH:MM[:SS]';
      return;
    }
  }
  $('controls-error').textContent = '';
  const wasPast = state.asRecordedAt;
  Object.assign(state, { from, to: f.addDays(last, 1), channel: $('channel').value, asRecordedAt });
  writeUrl();
  if (wasPast !== asRecordedAt) startListening();
  refresh();
}

// The report as a file. CSV is for Excel: UTF-8 with a byte-order mark (so Excel reads it as
// UTF-8 in any locale) and, on the Vietnamese page, the forms' Vietnamese headings.
async function downloadReport(ext) {
  const options = ext === 'csv' ? { bom: 'true', headings: state.lang === 'vi' ? 'vi' : 'ids' } : {};
  try {
    await api.download(`/v1/reports/${state.form}.${ext}?${q(scope(options))}`, `${state.form}.${ext}`);
  } catch (e) {
    $('error').textContent = e.message;
  }
}

function init() {
  document.documentElement.classList.toggle('wall', state.wall);
  document.body.classList.toggle('wall', state.wall);
  applyWords();
  $('lang').addEventListener('click', () => {
    state.lang = state.lang === 'vi' ? 'en' : 'vi';
    writeUrl();
    applyWords();
    if (me) refresh();
  });
  $('signout').addEventListener('click', signOut);
  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();
    $('signin-error').textContent = '';
    api.setToken($('token').value.trim());
    $('token').value = '';
    showSignedIn();
  });
  $('controls').addEventListener('submit', onControls);
  for (const b of document.querySelectorAll('[data-preset]')) {
    b.addEventListener('click', () => preset(b.dataset.preset));
  }
  $('download-csv').addEventListener('click', () => downloadReport('csv'));
  $('download-xlsx').addEventListener('click', () => downloadReport('xlsx'));
  window.addEventListener('resize', () => chart?.setSize({ width: Math.max(320, $('trend').clientWidth - 8), height: chart.height }));
  writeUrl();
  fetch('/dashboard/config.json').then((r) => r.json()).then((c) => { config = c; }).catch(() => {})
    .finally(() => (api.token() ? showSignedIn() : showSignIn()));
}

init();
