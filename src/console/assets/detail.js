// A token's page: its fields and permissions, its usage (requests per day
// as a small SVG chart built with DOM calls, its last addresses, its last
// refusal), its audit events, and "explain a request" for it.

import { admin, ApiError } from './api.js';
import { $, h, svg, clear, when, day, roleName, clearErrors, fieldError, formError } from './dom.js';

const DAYS = 14;

function scopeText(t) {
  if (t.scope.type === 'workspace') return [`Workspace ${t.workspace_id}: ${roleName(t.scope.role)}`];
  return t.scope.projects.map((p) => `${p.project_id}: ${roleName(p.role)}`);
}

function expiryNode(t) {
  if (!t.expires_at) return h('span', { class: 'badge warn', title: 'This token never expires' }, 'Never expires');
  return h('span', {}, when(t.expires_at));
}

function stateBadge(state) {
  return h('span', { class: `badge state-${state}` }, state[0].toUpperCase() + state.slice(1));
}

// Requests per UTC day over the last DAYS days, from the hourly buckets.
function perDay(usage) {
  const days = [];
  const today = new Date();
  for (let i = DAYS - 1; i >= 0; i--) {
    const d = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() - i));
    days.push({ day: d.toISOString().slice(0, 10), allowed: 0, refused: 0 });
  }
  const byDay = new Map(days.map((d) => [d.day, d]));
  for (const hour of usage.hours) {
    const d = byDay.get(hour.hour.slice(0, 10));
    if (d) {
      d.allowed += hour.allowed;
      d.refused += hour.refused;
    }
  }
  return days;
}

function chart(days) {
  const W = 28 * days.length;
  const H = 120;
  const max = Math.max(1, ...days.map((d) => d.allowed + d.refused));
  const total = days.reduce((n, d) => n + d.allowed + d.refused, 0);
  const g = svg('svg', {
    viewBox: `0 0 ${W} ${H + 18}`,
    class: 'chart',
    role: 'img',
    'aria-labelledby': 'chart-title',
    preserveAspectRatio: 'xMidYMid meet',
  }, svg('title', { id: 'chart-title' }, `Requests per day, last ${DAYS} days: ${total} in all`));
  days.forEach((d, i) => {
    const x = i * 28 + 4;
    const ha = Math.round((d.allowed / max) * H);
    const hr = Math.round((d.refused / max) * H);
    const label = `${d.day}: ${d.allowed} allowed, ${d.refused} refused`;
    g.append(
      svg('rect', { x, y: H - ha - hr, width: 20, height: hr, class: 'bar-refused' }, svg('title', {}, label)),
      svg('rect', { x, y: H - ha, width: 20, height: ha, class: 'bar-allowed', 'data-day': d.day, 'data-count': d.allowed }, svg('title', {}, label)),
    );
    if ((days.length - 1 - i) % 2 === 0) {
      g.append(svg('text', { x: x + 10, y: H + 14, class: 'axis', 'text-anchor': 'middle' }, d.day.slice(5)));
    }
  });
  return g;
}

function table(caption, heads, rows, id) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { id, class: 'plain' },
      h('caption', {}, caption),
      h('thead', {}, h('tr', {}, heads.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c, i) => h('td', { 'data-label': heads[i] }, c))))),
    ),
  );
}

function explainForm(t) {
  const result = h('div', { id: 'explain-result', role: 'status', 'aria-live': 'polite' });
  const form = h(
    'form',
    { id: 'explain-form', class: 'explain', method: 'post', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'x-method' }, 'Method'),
      h('select', { id: 'x-method' }, ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'].map((m) => h('option', { value: m }, m))),
      h('p', { id: 'x-method-error', class: 'field-error', hidden: true })),
    h('div', { class: 'field grow' }, h('label', { for: 'x-path' }, 'Path'),
      h('input', { id: 'x-path', type: 'text', spellcheck: 'false', placeholder: '/api/v1/workspaces/…', 'aria-describedby': 'x-path-error' }),
      h('p', { id: 'x-path-error', class: 'field-error', hidden: true })),
    h('div', { class: 'field' }, h('label', { for: 'x-client' }, 'Client address (optional)'),
      h('input', { id: 'x-client', type: 'text', spellcheck: 'false', 'aria-describedby': 'x-client-error' }),
      h('p', { id: 'x-client-error', class: 'field-error', hidden: true })),
    h('p', { id: 'x-error', class: 'form-error', role: 'alert', hidden: true }),
    h('button', { type: 'submit', id: 'x-submit' }, 'Explain'),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    clear(result);
    const body = { token_id: t.id, method: $('x-method').value, path: $('x-path').value.trim() };
    const client = $('x-client').value.trim();
    if (client) body.client = client;
    try {
      const x = await admin.explain(body);
      result.append(
        h('p', { class: `verdict verdict-${x.decision}` }, `${x.decision.toUpperCase()} (${x.status})${x.code ? `: ${x.code}` : ''}`),
        h('ol', { class: 'steps' }, x.steps.map((s) => h('li', {}, s))),
      );
    } catch (e) {
      const labels = { method: ['x-method', 'Method'], path: ['x-path', 'Path'], client: ['x-client', 'Client address'] };
      let placed = false;
      for (const [k, msg] of Object.entries((e instanceof ApiError && e.fields) || {})) {
        const l = labels[k];
        if (l) {
          fieldError(l[0], `${l[0]}-error`, l[1], msg);
          placed = true;
        }
      }
      if (!placed) formError('x-error', e.message);
    }
  });
  return h('section', { 'aria-labelledby': 'explain-title', class: 'card' }, h('h2', { id: 'explain-title' }, 'Explain a request'),
    h('p', { class: 'help' }, 'What the gate would decide for a request with this token, and why.'), form, result);
}

// Renders token `id` into the detail view. `actions`: the row actions
// (disable, enable, rotate, revoke), each (token, button) → Promise.
export async function showDetail(id, actions) {
  const view = clear($('detail-view'));
  const back = h('a', { href: '#/', class: 'back' }, '← Access Tokens');
  view.append(back);
  let shown;
  try {
    shown = await admin.show(id);
  } catch (e) {
    view.append(h('h1', { id: 'detail-title' }, 'Token'), h('p', { class: 'form-error', role: 'alert' }, e.message));
    return;
  }
  const t = shown.token;
  const buttons = h('div', { class: 'actions left' });
  for (const [label, act, show] of [
    ['Disable', actions.disable, t.state === 'enabled'],
    ['Enable', actions.enable, t.state === 'disabled'],
    ['Rotate', actions.rotate, t.state !== 'revoked'],
    ['Revoke', actions.revoke, t.state !== 'revoked'],
  ]) {
    if (!show) continue;
    const b = h('button', { type: 'button', class: label === 'Revoke' ? 'danger' : '', 'data-action': label.toLowerCase() }, label);
    b.addEventListener('click', () => act(t, b));
    buttons.append(b);
  }
  const dl = h('dl', { class: 'facts' });
  const fact = (k, v) => dl.append(h('dt', {}, k), h('dd', {}, v));
  fact('Id', h('code', {}, t.id));
  fact('State', stateBadge(t.state));
  fact('Type', t.scope.type === 'workspace' ? 'Workspace' : 'Project');
  fact('Workspace', t.workspace_id);
  fact('Creator', t.created_by);
  fact('Created', when(t.created_at));
  fact('Expires', expiryNode(t));
  fact('Last used', t.last_used_at ? when(t.last_used_at) : 'Never');
  if (t.description) fact('Description', t.description);
  if (t.disabled_at) fact('Disabled', `${when(t.disabled_at)}${t.disabled_by ? ` by ${t.disabled_by}` : ''}`);
  if (t.revoked_at) fact('Revoked', `${when(t.revoked_at)}${t.revoked_by ? ` by ${t.revoked_by}` : ''}`);
  if (t.rotated_from) fact('Rotated from', h('a', { href: `#/tokens/${t.rotated_from}` }, t.rotated_from));
  if (t.rotated_to) fact('Rotated to', h('a', { href: `#/tokens/${t.rotated_to}` }, t.rotated_to));
  if (t.allow_from && t.allow_from.length) fact('Allowed from', t.allow_from.join(', '));

  const perms = shown.permissions.map((p) =>
    h('li', {}, h('strong', {}, p.scope === 'workspace' ? `Workspace: ${roleName(p.role)}` : `${p.project_id}: ${roleName(p.role)}`),
      p.role_defined ? ` — ${p.permissions.length} permissions` : ' — this role is no longer defined; the token is refused',
      h('details', {}, h('summary', {}, 'Permissions'), h('p', { class: 'perms' }, p.permissions.join(', ')))));

  view.append(
    h('div', { class: 'head' }, h('h1', { id: 'detail-title', tabindex: '-1' }, t.name), buttons),
    h('p', { id: 'detail-error', class: 'form-error', role: 'alert', hidden: true }),
    h('section', { class: 'card' }, dl, h('h2', {}, 'Projects and roles'), h('ul', { class: 'perm-list' }, perms)),
  );

  const usageCard = h('section', { class: 'card', id: 'usage', 'aria-labelledby': 'usage-title' }, h('h2', { id: 'usage-title' }, 'Usage'));
  const auditCard = h('section', { class: 'card', id: 'audit', 'aria-labelledby': 'audit-title' }, h('h2', { id: 'audit-title' }, 'Audit events'));
  view.append(usageCard, auditCard, explainForm(t));
  $('detail-title').focus();

  try {
    const u = await admin.usage(t.id, `${DAYS}d`);
    const parts = [
      h('p', { id: 'usage-totals' }, `${u.totals.allowed} allowed and ${u.totals.refused} refused since ${day(u.since)}.`),
      chart(perDay(u)),
      u.last_refusal ? h('p', {}, `Last refusal: ${u.last_refusal.code} at ${when(u.last_refusal.at)}.`) : null,
      u.clients.length
        ? table('Last addresses', ['Address', 'User agent', 'First seen', 'Last seen'],
          u.clients.map((c) => [c.address, c.user_agent || '—', when(c.first_seen), when(c.last_seen)]), 'clients')
        : h('p', { class: 'muted' }, 'No client seen yet.'),
    ];
    usageCard.append(...parts.filter(Boolean));
  } catch (e) {
    usageCard.append(h('p', { class: 'form-error' }, e.message));
  }
  try {
    const a = await admin.audit({ token: t.id, limit: 50 });
    auditCard.append(a.events.length
      ? table('Changes to this token, newest first', ['Time', 'Action', 'By', 'From'],
        a.events.map((ev) => [when(ev.time), ev.action, ev.actor, ev.client || '—']), 'audit-events')
      : h('p', { class: 'muted' }, 'No events.'));
  } catch (e) {
    auditCard.append(h('p', { class: 'form-error' }, e.message));
  }
}
