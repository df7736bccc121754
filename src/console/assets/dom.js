// Small DOM helpers. Every node is built with DOM APIs: no HTML parsed from strings, no
// style attributes (the Content-Security-Policy forbids inline style), so
// text from the API is always text, never markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

// h('p', {class: 'x', id: 'y'}, 'text', child, ...)
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'style') throw new Error('no inline style');
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function $(id) {
  return document.getElementById(id);
}

// `2027-03-01T12:00:00Z` → `2027-03-01 12:00 UTC`
export function when(iso) {
  if (!iso) return '—';
  return iso.replace('T', ' ').replace(/:\d\dZ$/, ' UTC').replace(/Z$/, ' UTC');
}

export function day(iso) {
  return iso ? iso.slice(0, 10) : '—';
}

// Whole days from now to `iso` (negative: in the past).
export function daysFrom(iso) {
  return Math.round((Date.parse(iso) - Date.now()) / 86400000);
}

// `workspace_manager` → `Workspace Manager`
export function roleName(name) {
  return name
    .split('_')
    .map((w) => (w ? w[0].toUpperCase() + w.slice(1) : w))
    .join(' ');
}

// Announces `text` to screen readers (and shows it in the status line).
export function announce(text) {
  const s = $('status');
  s.textContent = '';
  s.textContent = text;
}

// Shows `message` next to the field `inputId` (its error paragraph is
// `errorId`), marks the field invalid, and returns the field.
export function fieldError(inputId, errorId, label, message) {
  const input = $(inputId);
  const err = $(errorId);
  err.textContent = `${label}: ${message}`;
  err.hidden = false;
  if (input) input.setAttribute('aria-invalid', 'true');
  return input;
}

// Clears every field error inside `root`.
export function clearErrors(root) {
  for (const p of root.querySelectorAll('.field-error, .form-error')) {
    p.textContent = '';
    p.hidden = true;
  }
  for (const el of root.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

export function formError(id, message) {
  const p = $(id);
  p.textContent = message;
  p.hidden = false;
}

// An expiry choice (`7d`, `custom`, `never`…) with its date field, as the
// API's `expires` (`custom` → the date: 00:00 UTC that day).
export function expiryValue(selectId, dateId) {
  const v = $(selectId).value;
  if (v === 'custom') return $(dateId).value || '';
  return v;
}

// Shows the custom date field and the never-warning for an expiry select.
export function wireExpiry(selectId, customId, warningId) {
  const update = () => {
    const v = $(selectId).value;
    $(customId).hidden = v !== 'custom';
    $(warningId).hidden = v !== 'never';
  };
  $(selectId).addEventListener('change', update);
  update();
  return update;
}

// Once the user edits a field marked invalid, its error goes away.
export function clearOnInput(root) {
  const clearField = (ev) => {
    const el = ev.target;
    if (!el.id || el.getAttribute('aria-invalid') !== 'true') return;
    el.removeAttribute('aria-invalid');
    const err = document.getElementById(`${el.id}-error`);
    if (err) {
      err.textContent = '';
      err.hidden = true;
    }
  };
  root.addEventListener('input', clearField);
  root.addEventListener('change', clearField);
}
