// The Create Access Token modal: name, workspace, scope (a workspace role,
// or projects each with its role, "Add another project"), expiry. Sends
// one create request; the API's field errors are shown next to their
// fields. The new value goes straight to the secret dialog, never kept.

import { admin, ApiError } from './api.js';
import { $, h, clear, roleName, clearErrors, clearOnInput, fieldError, formError, expiryValue, wireExpiry } from './dom.js';

let ctx = null; // { session, roles, onCreated(answer) }
let opener = null;

function roleOptions(scope, selected) {
  return ctx.roles
    .filter((r) => r.scope === scope || r.scope === 'any')
    .map((r) => h('option', { value: r.name, selected: r.name === selected }, `${roleName(r.name)} (${r.name})`));
}

function projectRows() {
  return [...$('c-projects').querySelectorAll('li')];
}

function renumber() {
  const rows = projectRows();
  rows.forEach((li, i) => {
    const n = i + 1;
    li.querySelector('.p-id-label').textContent = `Project ${n}`;
    li.querySelector('.p-role-label').textContent = `Role in project ${n}`;
    const remove = li.querySelector('.p-remove');
    remove.setAttribute('aria-label', `Remove project ${n}`);
    remove.hidden = rows.length === 1;
  });
}

let rowSeq = 0;
function addProject(focus) {
  const k = ++rowSeq;
  const idInput = `c-p${k}-id`;
  const roleInput = `c-p${k}-role`;
  const li = h(
    'li',
    { class: 'project-row', 'data-row': k },
    h(
      'div',
      { class: 'field' },
      h('label', { for: idInput, class: 'p-id-label' }, 'Project'),
      h('input', { id: idInput, class: 'p-id', type: 'text', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': `${idInput}-error` }),
      h('p', { id: `${idInput}-error`, class: 'field-error', hidden: true }),
    ),
    h(
      'div',
      { class: 'field' },
      h('label', { for: roleInput, class: 'p-role-label' }, 'Role'),
      h('select', { id: roleInput, class: 'p-role', 'aria-describedby': `${roleInput}-error` }, roleOptions('project', 'project_member')),
      h('p', { id: `${roleInput}-error`, class: 'field-error', hidden: true }),
    ),
    h('button', { type: 'button', class: 'p-remove quiet' }, 'Remove'),
  );
  li.querySelector('.p-remove').addEventListener('click', () => {
    const rows = projectRows();
    const i = rows.indexOf(li);
    li.remove();
    renumber();
    // Focus the row that took its place (one row always stays).
    const left = projectRows();
    left[Math.min(i, left.length - 1)].querySelector('.p-id').focus();
  });
  $('c-projects').append(li);
  renumber();
  if (focus) li.querySelector('.p-id').focus();
}

function scope() {
  return document.querySelector('input[name="scope"]:checked').value;
}

function showScope() {
  const project = scope() === 'project';
  $('c-workspace-scope').hidden = project;
  $('c-project-scope').hidden = !project;
  if (project && projectRows().length === 0) addProject(false);
}

function reset() {
  const form = $('create-form');
  form.reset();
  clearErrors(form);
  clear($('c-projects'));
  clear($('c-role')).append(...roleOptions('workspace', 'workspace_viewer'));
  const ws = $('c-workspace');
  if (ctx.session.workspace) {
    ws.value = ctx.session.workspace;
    ws.readOnly = true;
  } else {
    ws.readOnly = false;
  }
  showScope();
  updateExpiry();
}

let updateExpiry = () => {};

// Where each API field error is shown: [input, error paragraph, label].
function placeOf(key) {
  const fixed = {
    name: ['c-name', 'c-name-error', 'Token name'],
    workspace_id: ['c-workspace', 'c-workspace-error', 'Workspace'],
    scope: ['c-scope-workspace', 'c-scope-error', 'Token scope'],
    'scope.role': ['c-role', 'c-role-error', 'Workspace role'],
    'scope.projects': ['c-add-project', 'c-projects-error', 'Projects'],
    expires: [$('c-expires').value === 'custom' ? 'c-expires-date' : 'c-expires', 'c-expires-error', 'Expiry'],
  };
  if (fixed[key]) return fixed[key];
  const m = /^scope\.projects\[(\d+)\]\.(project_id|role)$/.exec(key);
  if (m) {
    const li = projectRows()[Number(m[1])];
    if (li) {
      const input = li.querySelector(m[2] === 'role' ? '.p-role' : '.p-id');
      const n = Number(m[1]) + 1;
      return [input.id, `${input.id}-error`, m[2] === 'role' ? `Role in project ${n}` : `Project ${n}`];
    }
  }
  return null;
}

function showErrors(e) {
  let first = null;
  const unplaced = [];
  for (const [key, msg] of Object.entries(e.fields)) {
    const place = placeOf(key);
    if (place) {
      const input = fieldError(place[0], place[1], place[2], msg);
      first = first || input;
    } else {
      unplaced.push(`${key}: ${msg}`);
    }
  }
  if (unplaced.length || !first) {
    formError('create-error', [e.message, ...unplaced].join(' '));
  }
  (first || $('c-name')).focus();
}

async function submit(ev) {
  ev.preventDefault();
  const form = $('create-form');
  clearErrors(form);
  const body = {
    name: $('c-name').value.trim(),
    workspace_id: $('c-workspace').value.trim(),
    expires: expiryValue('c-expires', 'c-expires-date'),
  };
  if (scope() === 'workspace') {
    body.scope = { type: 'workspace', role: $('c-role').value };
  } else {
    body.scope = {
      type: 'project',
      projects: projectRows().map((li) => ({
        project_id: li.querySelector('.p-id').value.trim(),
        role: li.querySelector('.p-role').value,
      })),
    };
  }
  // Empty fields are left out, so the API names them as required.
  for (const k of ['name', 'workspace_id', 'expires']) if (!body[k]) delete body[k];
  const button = $('c-submit');
  button.disabled = true;
  try {
    const created = await admin.create(body);
    $('create-dialog').close();
    ctx.onCreated(created, opener);
  } catch (e) {
    if (e instanceof ApiError) showErrors(e);
    else formError('create-error', String(e));
  } finally {
    button.disabled = false;
  }
}

export function initCreate() {
  $('create-form').addEventListener('submit', submit);
  clearOnInput($('create-form'));
  $('c-cancel').addEventListener('click', () => $('create-dialog').close());
  $('c-add-project').addEventListener('click', () => addProject(true));
  for (const r of document.querySelectorAll('input[name="scope"]')) r.addEventListener('change', showScope);
  updateExpiry = wireExpiry('c-expires', 'c-custom', 'c-expires-warning');
  $('create-dialog').addEventListener('close', () => {
    // Focus goes back to what opened the dialog.
    if (opener && document.body.contains(opener)) opener.focus();
  });
}

// Opens the modal. `context`: { session, roles, onCreated(answer, opener) }.
export function openCreate(context, from) {
  ctx = context;
  opener = from || document.activeElement;
  reset();
  $('create-dialog').showModal();
  $('c-name').focus();
}
