// The projection's HTTP API as the page uses it: the bearer token from sessionStorage in the
// Authorization header (never in a URL), a small queue that keeps at most two queries in
// flight (the service sheds more than `max_live_queries` at once) and honours Retry-After,
// and the live-notice stream read with fetch (EventSource cannot send a header).

const TOKEN_KEY = 'motcua.dashboard.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    this.field = body?.field;
  }
}

const MAX_IN_FLIGHT = 2;
let inFlight = 0;
const waiting = [];

async function slot() {
  if (inFlight < MAX_IN_FLIGHT) {
    inFlight++;
    return;
  }
  await new Promise((resolve) => waiting.push(resolve));
}

function release() {
  const next = waiting.shift();
  if (next) next();
  else inFlight--;
}

function headers() {
  return { Authorization: `Bearer ${token() ?? ''}` };
}

async function send(path) {
  for (let attempt = 0; ; attempt++) {
    await slot();
    let response;
    try {
      response = await fetch(path, { headers: headers(), cache: 'no-store' });
    } finally {
      release();
    }
    if (response.status === 429 && attempt < 3) {
      const secs = Number(response.headers.get('Retry-After') ?? '1');
      await new Promise((r) => setTimeout(r, Math.max(1, secs) * 1000));
      continue;
    }
    return response;
  }
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON
  }
  return new ApiError(response.status, body);
}

export async function getJson(path) {
  const response = await send(path);
  if (!response.ok) throw await failure(response);
  return response.json();
}

// A file answer (CSV, XLSX) saved under the name the server gives.
export async function download(path, fallbackName) {
  const response = await send(path);
  if (!response.ok) throw await failure(response);
  const disposition = response.headers.get('Content-Disposition') ?? '';
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  return q.toString();
}

// Reads `GET /v1/stream` until `signal` aborts; calls onNotice(position) per `applied` event
// and onState('live' | 'reconnecting' | 'refused'). Reconnects with a growing delay.
export async function listen(signal, onNotice, onState) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const response = await fetch('/v1/stream', { headers: headers(), signal, cache: 'no-store' });
      if (response.status === 401) {
        onState('refused');
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      onState('live');
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseEvent(block);
          if (event?.type === 'applied') onNotice(event.data.position);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    onState('reconnecting');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 30_000);
  }
}

function parseEvent(block) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  try {
    return { type, data: JSON.parse(data.join('\n')) };
  } catch {
    return null;
  }
}
