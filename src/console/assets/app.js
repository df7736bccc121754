// The token console: sign-in, the Access Tokens list (search and
// filters), the row actions (disable, enable, rotate with overlap,
// revoke), and the dialogs. Views are chosen by the URL's fragment
// (`#/`, `#/tokens/<id>`), which never holds a secret. A new token value
// lives only in the secret dialog, and is removed from the page when the
// dialog closes.

import { admin, session, ApiError } from './api.js';
import { $, h, clear, when, day, daysFrom, roleName, announce, clearErrors, clearOnInput, fieldError, formError, expiryValue, wireExpiry } from './dom.js';
import { initCreate, openCreate } from './create.js';
import { showDetail } from './detail.js';

const state = {
  session: null,
  roles: [],
  tokens: [],
  cursor: null,
};

function show(view) {
  for (const id of ['loading', 'sign-in-view', 'list-view', 'detail-view']) $(id).hidden = id !== view;
}

// === sign-in ===

function signedOut(message) {
  state.session = null;
  session.forget();
  $('who').textContent = '';
  $('sign-out').hidden = true;
  show('sign-in-view');
  const err = $('credential-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('credential').focus();
}

async function signedIn(s) {
  state.session = s;
  $('who').textContent = s.workspace ? `Signed in with ${s.caller} (workspace ${s.workspace})` : 'Signed in with the admin key';
  $('sign-out').hidden = false;
  $('f-workspace-field').hidden = Boolean(s.workspace);
  try {
    state.roles = (await admin.roles()).roles;
  } catch (e) {
    state.roles = [];
  }
  route();
}

async function signIn(ev) {
  ev.preventDefault();
  const input = $('credential');
  clearErrors($('sign-in-form'));
  const credential = input.value;
  // The credential leaves the page with the request, and the field.
  input.value = '';
  if (!credential.trim()) {
    fieldError('credential', 'credential-error', 'Admin key or access token', 'is required');
    input.focus();
    return;
  }
  try {
    const s = await session.signIn(credential);
    await signedIn(s);
  } catch (e) {
    const msg = e instanceof ApiError && e.fields.body ? e.fields.body : e.message;
    fieldError('credential', 'credential-error', 'Admin key or access token', msg);
    input.focus();
  }
}

async function signOut() {
  try {
    await session.signOut();
  } catch (e) {
    // Never "Signed out." while the session lives on: on a shared machine
    // the next person would be signed in.
    formError(state.detail ? 'detail-error' : 'list-error', `Sign-out failed: ${e.message} The session is still open; try again.`);
    return;
  }
  state.tokens = [];
  clear($('token-rows'));
  signedOut('Signed out.');
}

// A refusal that means the session is gone sends the page back to sign-in.
function failed(e, where) {
  if (e instanceof ApiError && e.status === 401) {
    signedOut('The session has ended; sign in again.');
    return;
  }
  formError(where, e.message);
}

// === the list ===

function filters() {
  return {
    workspace: state.session.workspace ? '' : $('f-workspace').value.trim(),
    state: $('f-state').value,
    type: $('f-type').value,
    expiring: $('f-expiring').value,
    unused: $('f-unused').value,
    limit: 100,
  };
}

function projectsAndRoles(t) {
  if (t.scope.type === 'workspace') {
    return h('span', {}, `Workspace ${t.workspace_id}: ${roleName(t.scope.role)}`);
  }
  return h('ul', { class: 'inline-list' }, t.scope.projects.map((p) => h('li', {}, `${p.project_id}: ${roleName(p.role)}`)));
}

function expiryCell(t) {
  if (!t.expires_at) return h('span', { class: 'badge warn', title: 'Never expires: consider rotating to a token with an expiry' }, 'Never expires');
  const d = daysFrom(t.expires_at);
  const rel = d < 0 ? 'expired' : d === 0 ? 'today' : `in ${d} day${d === 1 ? '' : 's'}`;
  return h('span', { title: when(t.expires_at) }, `${day(t.expires_at)} (${rel})`);
}

function stateCell(t) {
  const label = { enabled: 'Enabled', disabled: 'Disabled', expired: 'Expired', revoked: 'Revoked' }[t.state] || t.state;
  const overlap = t.revoked_at && Date.parse(t.revoked_at) > Date.now() ? h('span', { class: 'muted small' }, ` old value works until ${when(t.revoked_at)}`) : null;
  return h('div', {}, h('span', { class: `badge state-${t.state}` }, label), overlap);
}

function requestsCell(t) {
  if (t.requests_7d === null) return '—';
  if (!t.requests_7d) return '';
  const r = t.requests_7d;
  return `${r.allowed}${r.refused ? ` (${r.refused} refused)` : ''}`;
}

function actionButtons(t) {
  const cell = h('div', { class: 'row-actions' });
  const add = (label, act, cls) => {
    const b = h('button', { type: 'button', class: cls || '', 'data-action': label.toLowerCase(), 'aria-label': `${label} ${t.name}` }, label);
    b.addEventListener('click', () => act(t, b));
    cell.append(b);
  };
  if (t.state === 'enabled') add('Disable', disable);
  if (t.state === 'disabled') add('Enable', enable);
  if (t.state !== 'revoked') add('Rotate', openRotate);
  if (t.state !== 'revoked') add('Revoke', confirmRevoke, 'danger');
  return cell;
}

function row(t) {
  const cells = [
    ['Name', h('div', {}, h('a', { href: `#/tokens/${t.id}`, class: 'token-name' }, t.name), h('div', { class: 'muted small' }, t.id))],
    ['Type', t.scope.type === 'workspace' ? 'Workspace' : 'Project'],
    ['Projects and roles', projectsAndRoles(t)],
    ['Creator', t.created_by],
    ['Created', day(t.created_at)],
    ['Expiry', expiryCell(t)],
    ['State', stateCell(t)],
    ['Requests, 7 days', requestsCell(t)],
    ['Actions', actionButtons(t)],
  ];
  return h('tr', { 'data-token-id': t.id, 'data-state': t.state },
    cells.map(([label, v]) => h('td', { 'data-label': label, 'data-col': label.toLowerCase().split(/[ ,]+/)[0] }, v)));
}

function matches(t, q) {
  if (!q) return true;
  q = q.toLowerCase();
  const projects = t.scope.type === 'project' ? t.scope.projects.map((p) => p.project_id).join(' ') : '';
  return [t.name, t.id, t.created_by, t.workspace_id, projects].some((s) => s && s.toLowerCase().includes(q));
}

function renderRows() {
  const q = $('f-search').value.trim();
  const shown = state.tokens.filter((t) => matches(t, q));
  clear($('token-rows')).append(...shown.map(row));
  $('list-empty').hidden = shown.length > 0;
  $('list-more').hidden = !state.cursor;
}

async function loadList(more) {
  clearErrors($('filters'));
  $('list-error').hidden = true;
  const params = filters();
  if (more && state.cursor) params.cursor = state.cursor;
  try {
    const page = await admin.list(params);
    state.tokens = more ? state.tokens.concat(page.tokens) : page.tokens;
    state.cursor = page.next_cursor;
    renderRows();
    $('token-rows').setAttribute('data-loaded', String(Date.now()));
  } catch (e) {
    if (e instanceof ApiError && e.fields && e.fields.workspace) {
      fieldError('f-workspace', 'f-workspace-error', 'Workspace', e.fields.workspace);
      return;
    }
    failed(e, 'list-error');
  }
}

// === actions ===

async function act(what, fn, t, button) {
  if (button) button.disabled = true;
  try {
    await fn(t.id);
    announce(`${t.name}: ${what}.`);
    await refresh(t.id);
  } catch (e) {
    if (button) button.disabled = false;
    if (e instanceof ApiError && e.status === 401) return failed(e);
    formError(state.detail ? 'detail-error' : 'list-error', `${t.name}: ${e.message}`);
  }
}

const disable = (t, b) => act('disabled', admin.disable, t, b);
const enable = (t, b) => act('enabled', admin.enable, t, b);

let revoking = null;
function confirmRevoke(t, button) {
  revoking = { t, button };
  $('confirm-text').textContent = `Revoke “${t.name}” (${t.id})? It stops working at once, for good.`;
  $('confirm-dialog').showModal();
  $('confirm-cancel').focus();
}

let rotating = null;
let updateRotateExpiry = () => {};
function openRotate(t, button) {
  rotating = { t, button };
  const form = $('rotate-form');
  form.reset();
  clearErrors(form);
  updateRotateExpiry();
  $('rotate-title').textContent = `Rotate “${t.name}”`;
  $('rotate-about').textContent = t.expires_at
    ? `A new value replaces this one. Now it expires ${when(t.expires_at)}.`
    : 'A new value replaces this one. Now it never expires.';
  $('rotate-dialog').showModal();
  $('r-expires').focus();
}

async function rotate(ev) {
  ev.preventDefault();
  const { t } = rotating;
  const form = $('rotate-form');
  clearErrors(form);
  const body = {};
  const expires = expiryValue('r-expires', 'r-expires-date');
  if (expires) body.expires = expires;
  if ($('r-overlap').value) body.overlap = $('r-overlap').value;
  $('r-submit').disabled = true;
  try {
    const created = await admin.rotate(t.id, body);
    $('rotate-dialog').close();
    const old = created.old;
    const note = old && old.revoked_at && Date.parse(old.revoked_at) > Date.now()
      ? `The old value keeps working until ${when(old.revoked_at)}.`
      : 'The old value has stopped working.';
    showSecret(created, rotating.button, 'Token rotated', note);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      $('rotate-dialog').close();
      return failed(e);
    }
    let placed = false;
    for (const [k, msg] of Object.entries((e instanceof ApiError && e.fields) || {})) {
      if (k === 'expires') {
        fieldError($('r-expires').value === 'custom' ? 'r-expires-date' : 'r-expires', 'r-expires-error', 'New expiry', msg);
        placed = true;
      } else if (k === 'overlap') {
        fieldError('r-overlap', 'r-overlap-error', 'Overlap', msg);
        placed = true;
      }
    }
    if (!placed) formError('rotate-error', e.message);
  } finally {
    $('r-submit').disabled = false;
  }
}

// === the secret, once ===

let secretOpener = null;
function showSecret(created, opener, title, note) {
  secretOpener = opener;
  $('secret-title').textContent = title;
  $('secret-note').textContent = `${created.token.name} (${created.token.id}). ${note || ''}`;
  $('secret-copied').textContent = '';
  $('secret-value').value = created.secret;
  $('secret-dialog').showModal();
  $('secret-copy').focus();
  // The list shows the new token behind the dialog.
  refresh(created.token.id);
}

async function copySecret() {
  const input = $('secret-value');
  try {
    // A browser may leave the clipboard promise pending (no permission
    // prompt in a headless one): give up after a second.
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 1000));
    await Promise.race([navigator.clipboard.writeText(input.value), timeout]);
    $('secret-copied').textContent = 'Copied to the clipboard.';
  } catch (e) {
    input.focus();
    input.select();
    $('secret-copied').textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
  }
}

// Gone from the page: the field, its selection, the note. Run as the
// dialog closes (Done, Escape), before the browser's `close` event.
function forgetSecret() {
  const input = $('secret-value');
  input.value = '';
  input.setSelectionRange(0, 0);
  $('secret-copied').textContent = '';
  $('secret-note').textContent = '';
}

function secretClosed() {
  forgetSecret();
  const back = secretOpener && document.body.contains(secretOpener) ? secretOpener : $('create-open');
  if (!$('list-view').hidden || !$('detail-view').hidden) back.focus();
}

// === routing ===

state.detail = null;
async function refresh(id) {
  if (state.detail) {
    if (state.detail === id || !id) await showDetail(state.detail, detailActions);
  } else {
    await loadList(false);
  }
}

const detailActions = { disable, enable, rotate: openRotate, revoke: confirmRevoke };

function route() {
  if (!state.session) return;
  const m = /^#\/tokens\/(tok_[A-Za-z0-9]+)$/.exec(location.hash);
  if (m) {
    state.detail = m[1];
    show('detail-view');
    showDetail(m[1], detailActions).catch((e) => failed(e, 'list-error'));
  } else {
    state.detail = null;
    show('list-view');
    loadList(false);
  }
}

// === start ===

async function start() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('create-open').addEventListener('click', (ev) =>
    openCreate({
      session: state.session,
      roles: state.roles,
      onCreated: (created, opener) => showSecret(created, opener, 'Token created'),
    }, ev.currentTarget));
  initCreate();
  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    loadList(false);
  });
  for (const id of ['f-state', 'f-type', 'f-expiring', 'f-unused']) $(id).addEventListener('change', () => loadList(false));
  $('f-workspace').addEventListener('change', () => loadList(false));
  $('f-search').addEventListener('input', renderRows);
  $('f-search').addEventListener('change', renderRows);
  $('list-more').addEventListener('click', () => loadList(true));
  $('secret-copy').addEventListener('click', copySecret);
  $('secret-done').addEventListener('click', () => {
    forgetSecret();
    $('secret-dialog').close();
  });
  $('secret-dialog').addEventListener('cancel', forgetSecret);
  $('secret-dialog').addEventListener('close', secretClosed);
  $('rotate-form').addEventListener('submit', rotate);
  clearOnInput($('rotate-form'));
  clearOnInput($('sign-in-form'));
  $('r-cancel').addEventListener('click', () => $('rotate-dialog').close());
  updateRotateExpiry = wireExpiry('r-expires', 'r-custom', 'r-expires-warning');
  $('rotate-dialog').addEventListener('close', () => {
    if (rotating && rotating.button && document.body.contains(rotating.button) && !$('secret-dialog').open) rotating.button.focus();
  });
  $('confirm-cancel').addEventListener('click', () => $('confirm-dialog').close());
  $('confirm-ok').addEventListener('click', async () => {
    $('confirm-dialog').close();
    if (revoking) await act('revoked', admin.revoke, revoking.t, revoking.button);
  });
  window.addEventListener('hashchange', route);
  try {
    await signedIn(await session.current());
  } catch (e) {
    signedOut();
  }
}

start();
