// Numbers and dates as the page shows them: Vietnamese conventions (1.234,5; dd/mm/yyyy) or,
// with the English switch, en-GB (1,234.5; dd/mm/yyyy as well).

const locales = { vi: 'vi-VN', en: 'en-GB' };
const cache = new Map();

function numberFormat(lang, digits) {
  const key = `${lang}:${digits}`;
  if (!cache.has(key)) {
    cache.set(key, new Intl.NumberFormat(locales[lang] ?? 'vi-VN', {
      minimumFractionDigits: 0,
      maximumFractionDigits: digits,
    }));
  }
  return cache.get(key);
}

// proto3 JSON: an int64 is a string, a zero value is left out.
export function int(value) {
  if (value === undefined || value === null || value === '') return 0;
  return Number(value);
}

export function count(lang, value) {
  return numberFormat(lang, 0).format(int(value));
}

// A rate's percent, or an em dash when the rate is absent (zero denominator).
export function percent(lang, rate) {
  if (!rate || rate.percent === undefined || rate.percent === null) return '—';
  return `${numberFormat(lang, 2).format(rate.percent)}%`;
}

// "numerator/denominator" of a rate.
export function fraction(lang, rate) {
  return `${count(lang, rate?.numerator)}/${count(lang, rate?.denominator)}`;
}

function pad(n) {
  return String(n).padStart(2, '0');
}

// "YYYY-MM-DD" (a local date of the API) as dd/mm/yyyy.
export function isoDate(iso) {
  const [y, m, d] = iso.split('-');
  return `${d}/${m}/${y}`;
}

// Vietnam's time (UTC+7 all year): the local time of every date the API speaks of.
const VN_OFFSET_MS = 7 * 3600 * 1000;

// An instant (a Date or RFC 3339 text) as dd/mm/yyyy HH:MM in Vietnam's time.
export function instant(value) {
  const t = new Date(new Date(value).getTime() + VN_OFFSET_MS);
  return `${pad(t.getUTCDate())}/${pad(t.getUTCMonth() + 1)}/${t.getUTCFullYear()} `
    + `${pad(t.getUTCHours())}:${pad(t.getUTCMinutes())}`;
}

// Today's local date in Vietnam, "YYYY-MM-DD".
export function today() {
  const t = new Date(Date.now() + VN_OFFSET_MS);
  return ymd(t.getUTCFullYear(), t.getUTCMonth() + 1, t.getUTCDate());
}

// "dd/mm/yyyy" typed by a user as "YYYY-MM-DD", or null when it is no valid date.
export function readDate(text) {
  const m = /^\s*(\d{1,2})\/(\d{1,2})\/(\d{4})\s*$/.exec(text);
  if (!m) return null;
  const [d, mo, y] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const iso = ymd(y, mo, d);
  return iso === `${m[3]}-${pad(mo)}-${pad(d)}` ? iso : null;
}

// "dd/mm/yyyy HH:MM[:SS]" typed by a user (Vietnam's time) as RFC 3339, or null.
export function readInstant(text) {
  const m = /^\s*(\S+)\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$/.exec(text);
  const date = m && readDate(m[1]);
  const secs = m?.[4] ?? '00';
  if (!date || Number(m[2]) > 23 || Number(m[3]) > 59 || Number(secs) > 59) return null;
  return `${date}T${pad(Number(m[2]))}:${m[3]}:${secs}+07:00`;
}

// The day after (or `days` after) a "YYYY-MM-DD" date.
export function addDays(iso, days) {
  const { y, m, d } = parseYmd(iso);
  return ymd(y, m, d + days);
}

// Date helpers on local dates written "YYYY-MM-DD".
export function ymd(y, m, d) {
  const date = new Date(Date.UTC(y, m - 1, d));
  return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}`;
}

export function parseYmd(iso) {
  const [y, m, d] = iso.split('-').map(Number);
  return { y, m, d };
}

// The months [from, to) of the `count` months that end with the month holding the day
// before `to`.
export function monthsEndingAt(to, n) {
  const { y, m, d } = parseYmd(to);
  const last = new Date(Date.UTC(y, m - 1, d - 1));
  const months = [];
  for (let i = n - 1; i >= 0; i--) {
    const start = new Date(Date.UTC(last.getUTCFullYear(), last.getUTCMonth() - i, 1));
    const sy = start.getUTCFullYear();
    const sm = start.getUTCMonth() + 1;
    months.push({ from: ymd(sy, sm, 1), to: ymd(sy, sm + 1, 1), label: `${pad(sm)}/${sy}` });
  }
  return months;
}
