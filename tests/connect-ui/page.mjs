// Runs sluice's Connect UI page as served (`GET /connect`) on a small
// stand-in for a browser's document: enough of the DOM for the page's
// script (elements, text, attributes, events, inputs), its opener (the
// app's window, which records the events the page posts to it) and the
// real `fetch` to the server. A plan of steps plays a user: wait for a
// text, click a button, type in a field, submit.
//
// node page.mjs <plan.json>
// plan: {url, embedded, steps: [{do: "token"|"wait"|"event"|"click"|"fill"|"submit"|"deny"|"end-then-open"|"snapshot", …}]}
// Prints {events, snapshots} as JSON; exits 1 naming a step that failed.
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));

class Element {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.attributes = {};
    this.listeners = {};
    this.ownText = '';
    this.value = '';
    this.disabled = false;
  }
  appendChild(child) {
    this.children.push(child);
    return child;
  }
  setAttribute(name, value) {
    this.attributes[name] = String(value);
    if (name === 'value') this.value = String(value);
  }
  getAttribute(name) {
    return this.attributes[name] ?? null;
  }
  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }
  dispatch(type) {
    const event = { type, target: this, defaultPrevented: false, preventDefault() { this.defaultPrevented = true; } };
    for (const fn of this.listeners[type] || []) fn.call(this, event);
    return event;
  }
  set textContent(text) {
    this.children = [];
    this.ownText = String(text);
  }
  get textContent() {
    return this.ownText + this.children.map((c) => c.textContent).join(' ');
  }
  *walk() {
    yield this;
    for (const c of this.children) yield* c.walk();
  }
}

const root = new Element('div');
root.setAttribute('id', 'sluice-connect');
const documentElement = new Element('html');
const document = {
  documentElement,
  createElement: (tag) => new Element(tag),
  getElementById: (id) => (id === 'sluice-connect' ? root : null)
};

const events = [];
const popups = [];
const listeners = [];
const url = new URL(plan.url);
const page = {
  URL,
  URLSearchParams,
  fetch,
  console,
  setTimeout,
  clearTimeout,
  setInterval,
  clearInterval,
  document,
  location: { href: url.href, search: url.search, origin: url.origin, pathname: url.pathname },
  addEventListener: (type, fn) => {
    if (type === 'message') listeners.push(fn);
  },
  confirm: () => true,
  // The provider's window: where the page sends it is recorded.
  open: () => {
    const win = { closed: false, location: { href: 'about:blank' }, close() { this.closed = true; } };
    popups.push(win);
    return win;
  },
  WebSocket: globalThis.WebSocket
};
page.window = page;
// Framed by the app (its window gets the page's messages), or opened
// alone (the page is its own top).
const opener = { postMessage: (event) => events.push(JSON.parse(JSON.stringify(event))) };
page.parent = plan.embedded ? opener : page;
page.top = plan.embedded ? opener : page;
vm.createContext(page);

const html = await (await fetch(url)).text();
const script = html.match(/<script>([\s\S]*?)<\/script>/)[1];
vm.runInContext(script, page);

const text = () => root.textContent.replace(/\s+/g, ' ').trim();
const find = (pred) => [...root.walk()].find(pred);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, pred) {
  for (let i = 0; i < 250; i++) {
    const found = pred();
    if (found) return found;
    await sleep(20);
  }
  console.error(`gave up waiting for ${what}; the page shows: ${text()}`);
  process.exit(1);
}

const snapshots = {};
for (const step of plan.steps) {
  switch (step.do) {
    case 'token':
      for (const fn of listeners) fn({ data: { type: 'session_token', sessionToken: step.token }, source: opener, origin: 'http://app.test' });
      break;
    case 'wait':
      await until(`"${step.text}"`, () => text().includes(step.text));
      break;
    case 'event':
      await until(`a ${step.type} event`, () => events.some((e) => e.type === step.type));
      break;
    case 'click': {
      const button = await until(`a "${step.text}" button`, () => find((e) => e.tagName === 'BUTTON' && e.textContent.trim() === step.text));
      button.dispatch('click');
      break;
    }
    case 'fill': {
      const input = await until(`field ${step.id}`, () => find((e) => e.attributes.id === step.id && (e.tagName === 'INPUT' || e.tagName === 'SELECT')));
      input.value = step.value;
      input.dispatch('input');
      break;
    }
    case 'submit': {
      const form = await until('a form', () => find((e) => e.tagName === 'FORM'));
      form.dispatch('submit');
      break;
    }
    case 'deny': {
      // The user refuses at the provider: the flow's page comes back to
      // the server's callback with the provider's error.
      const win = await until('the provider window', () => popups.find((w) => w.location.href !== 'about:blank'));
      const res = await fetch(win.location.href, { redirect: 'manual' });
      const state = new URL(res.headers.get('location')).searchParams.get('state');
      snapshots.popup = win.location.href;
      await fetch(`${url.origin}/oauth/callback?error=access_denied&error_description=${encodeURIComponent(step.why)}&state=${state}`);
      break;
    }
    case 'end-then-open': {
      // The app ends the session while the provider's window loads.
      const win = await until('the provider window', () => popups.find((w) => w.location.href !== 'about:blank'));
      const ended = await fetch(`${url.origin}/connect/session`, { method: 'DELETE', headers: { Authorization: `Bearer ${step.token}` } });
      if (ended.status !== 204) {
        console.error(`DELETE /connect/session answered ${ended.status}`);
        process.exit(1);
      }
      await fetch(win.location.href, { redirect: 'manual' });
      break;
    }
    case 'snapshot': {
      const inputs = [...root.walk()]
        .filter((e) => e.tagName === 'INPUT' || e.tagName === 'SELECT')
        .map((e) => ({ id: e.attributes.id, type: e.attributes.type || e.tagName.toLowerCase(), value: e.value }));
      const buttons = [...root.walk()].filter((e) => e.tagName === 'BUTTON').map((e) => e.textContent.trim());
      snapshots[step.name] = { text: text(), inputs, buttons };
      break;
    }
    default:
      console.error(`unknown step ${step.do}`);
      process.exit(1);
  }
}
console.log(JSON.stringify({ events, snapshots }));
process.exit(0);
