// The admin API as the console calls it: same-origin fetches, the session
// cookie sent by the browser, and the session's CSRF token in a header on
// every call. The token is kept in this module's memory only (never in
// storage or the URL); a reload asks the server for it again.

let csrf = null;

export const CSRF_HEADER = 'X-Hawzu-Csrf';

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || 'unknown';
    this.fields = (body && body.fields) || {};
  }
}

export async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (csrf) headers[CSRF_HEADER] = csrf;
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: 'network', message: 'The gate did not answer; check the connection.' });
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

const enc = encodeURIComponent;

export const session = {
  async current() {
    const s = await call('GET', '/console/session');
    csrf = s.csrf_token;
    return s;
  },
  async signIn(credential) {
    const s = await call('POST', '/console/session', { credential });
    csrf = s.csrf_token;
    return s;
  },
  // Ends the session this browser holds, or throws (the page then says
  // it is still open). A sign-in in another tab replaces the cookie and
  // the CSRF token this page holds: refused for the stale token, the
  // current one is read and the sign-out sent again.
  async signOut() {
    try {
      await call('DELETE', '/console/session');
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 403)) throw e;
      try {
        await this.current();
      } catch (gone) {
        // No live session behind the cookie: nothing left to end.
        if (!(gone instanceof ApiError && gone.status === 401)) throw gone;
        csrf = null;
        return;
      }
      await call('DELETE', '/console/session');
    }
    // Kept until the session has ended: a failed sign-out can be sent again.
    csrf = null;
  },
  forget() {
    csrf = null;
  },
};

export const admin = {
  list: (params) => call('GET', `/admin/v1/tokens${query(params)}`),
  create: (body) => call('POST', '/admin/v1/tokens', body),
  show: (id) => call('GET', `/admin/v1/tokens/${enc(id)}`),
  disable: (id) => call('POST', `/admin/v1/tokens/${enc(id)}/disable`),
  enable: (id) => call('POST', `/admin/v1/tokens/${enc(id)}/enable`),
  revoke: (id) => call('DELETE', `/admin/v1/tokens/${enc(id)}`),
  rotate: (id, body) => call('POST', `/admin/v1/tokens/${enc(id)}/rotate`, body),
  usage: (id, since) => call('GET', `/admin/v1/tokens/${enc(id)}/usage${query({ since })}`),
  audit: (params) => call('GET', `/admin/v1/audit${query(params)}`),
  explain: (body) => call('POST', '/admin/v1/explain', body),
  roles: () => call('GET', '/admin/v1/roles'),
};
