// sluice's Connect UI: the page an app opens (the frontend SDK's
// `openConnectUI({ baseURL: '<server>/connect/' })`, or a session's
// `connect_link`) for its end user to pick an integration and connect an
// account. Plain script, no build step: the server inlines it in the page
// and allows it by hash.
//
// `SluiceConnect` (below) is the logic without a page: which fields an
// integration asks for, how a value is checked, and which request of the
// server's connects it. The page at the end drives it; a test drives the
// same code without a page.
(function (root) {
  'use strict';

  // The fields each auth mode asks for before the provider's own.
  var BASE_FIELDS = {
    API_KEY: ['apiKey'],
    BASIC: ['username', 'password'],
    OAUTH2_CC: ['client_id', 'client_secret'],
    TBA: ['token_id', 'token_secret', 'oauth_client_id_override', 'oauth_client_secret_override'],
    BILL: ['username', 'password', 'organization_id', 'dev_key'],
    SIGNATURE: ['username', 'password']
  };

  // Labels of the base fields when the provider gives none.
  var KNOWN = {
    apiKey: { secret: true, title: 'API Key', example: 'Your API Key' },
    username: { secret: false, title: 'User Name', example: 'Your user name' },
    password: { secret: true, title: 'Password', example: 'Your password' },
    client_id: { secret: false, title: 'Client ID', example: 'Your Client ID' },
    client_secret: { secret: true, title: 'Client Secret', example: 'Your Client Secret' },
    oauth_client_id_override: { secret: false, title: 'OAuth Client ID', example: 'Your OAuth Client ID' },
    oauth_client_secret_override: { secret: true, title: 'OAuth Client Secret', example: 'Your OAuth Client Secret' },
    token_id: { secret: true, title: 'Token ID', example: 'Your Token ID' },
    token_secret: { secret: true, title: 'Token Secret', example: 'Token Secret' },
    organization_id: { secret: false, title: 'Organization ID', example: 'Your Organization ID' },
    dev_key: { secret: true, title: 'Developer Key', example: 'Your Developer Key' },
    privateKey: { secret: true, title: 'Private Key', example: 'Your Private Key' }
  };

  // A TBA connection signs with the integration's consumer unless the
  // user gives one of their own (both or neither).
  var OPTIONAL_BASE = { oauth_client_id_override: true, oauth_client_secret_override: true };

  // What each of these modes' routes takes, as the frontend SDK sends
  // it: nothing else of the form goes (a route refuses unknown fields).
  var OWN_FIELDS = {
    API_KEY: ['apiKey'],
    BASIC: ['username', 'password'],
    OAUTH2_CC: ['client_id', 'client_secret', 'client_certificate', 'client_private_key'],
    TBA: ['token_id', 'token_secret', 'oauth_client_id_override', 'oauth_client_secret_override'],
    BILL: ['username', 'password', 'organization_id', 'dev_key'],
    SIGNATURE: ['username', 'password']
  };

  // Modes connected in a window of the provider's (the OAuth flows the
  // server runs; `CUSTOM`, `INSTALL_PLUGIN` and `AWS_SIGV4` it does not).
  var POPUP_MODES = ['OAUTH2', 'OAUTH1', 'APP', 'MCP_OAUTH2', 'MCP_OAUTH2_GENERIC'];

  function own(obj, key) {
    return obj !== null && typeof obj === 'object' && Object.prototype.hasOwnProperty.call(obj, key);
  }

  function entries(obj) {
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return [];
    return Object.keys(obj).map(function (k) { return [k, obj[k]]; });
  }

  // The API's base URL from the page's: the page is `<base>/connect`.
  function apiBase(href) {
    var url = new URL(href);
    var path = url.pathname.replace(/\/+$/, '').replace(/\/connect$/, '');
    return url.origin + path;
  }

  function preconfigured(session, integrationKey) {
    var defaults = session && session.integrations_config_defaults;
    var entry = defaults && own(defaults, integrationKey) ? defaults[integrationKey] : null;
    var config = entry && entry.connection_config;
    return config && typeof config === 'object' ? config : {};
  }

  function field(group, name, schema, order) {
    schema = schema && typeof schema === 'object' ? schema : {};
    var known = group === 'credentials' && own(KNOWN, name) ? KNOWN[name] : {};
    var f = {
      group: group,
      name: name,
      title: schema.title || known.title || name,
      description: schema.description || '',
      example: schema.example || known.example || '',
      secret: own(schema, 'secret') ? schema.secret === true : known.secret === true,
      optional: schema.optional === true,
      hidden: schema.hidden === true,
      pattern: typeof schema.pattern === 'string' ? schema.pattern : null,
      format: typeof schema.format === 'string' ? schema.format : null,
      enum: Array.isArray(schema['enum']) ? schema['enum'].map(String) : null,
      prefix: typeof schema.prefix === 'string' ? schema.prefix : '',
      suffix: typeof schema.suffix === 'string' ? schema.suffix : '',
      docSection: typeof schema.doc_section === 'string' ? schema.doc_section : '',
      order: order
    };
    if (own(schema, 'default_value')) f.defaultValue = String(schema.default_value);
    return f;
  }

  // The fields an integration asks its user for, in the order shown
  // (the original's Connect UI's: a `connection_config` field with an
  // `order` first, then the base credentials, the provider's
  // credentials, the rest of `connection_config`, the assertion's).
  // A field the session preconfigures is not asked for: the server
  // applies the session's value. `auto` is true when nothing is left to
  // ask: the form is the one button that opens the provider's window
  // (a window opened without a click is blocked).
  function fields(provider, integration, session) {
    var mode = provider.auth_mode || 'NONE';
    var list = [];
    var order = 99;
    var seen = {};
    (BASE_FIELDS[mode] || []).forEach(function (name) {
      var schema = provider.credentials && own(provider.credentials, name) ? provider.credentials[name] : {};
      var f = field('credentials', name, schema, ++order);
      if (own(OPTIONAL_BASE, name) && mode === 'TBA') f.optional = true;
      list.push(f);
      seen[name] = true;
    });
    entries(provider.credentials).forEach(function (e) {
      var schema = e[1] || {};
      if (schema.automated || seen[e[0]]) return;
      list.push(field('credentials', e[0], schema, ++order));
      seen[e[0]] = true;
    });
    var preset = preconfigured(session, integration.unique_key);
    entries(provider.connection_config).forEach(function (e) {
      var schema = e[1] || {};
      if (schema.automated) return;
      var f = field('params', e[0], schema, typeof schema.order === 'number' ? schema.order : ++order);
      if (own(preset, e[0])) {
        f.hidden = true;
        f.preset = true;
      }
      list.push(f);
    });
    entries(provider.assertion_option).forEach(function (e) {
      list.push(field('assertion_option', e[0], e[1], ++order));
    });
    list.sort(function (a, b) { return a.order - b.order; });
    var shown = list.filter(function (f) { return !f.hidden; });
    return { mode: mode, fields: list, auto: shown.length === 0 && POPUP_MODES.indexOf(mode) >= 0 };
  }

  // What is wrong with a value, or null.
  function check(f, value) {
    var v = typeof value === 'string' ? value : '';
    if (f.hidden) return null;
    if (v === '') {
      // Left empty, a field with a default sends its default.
      if (f.optional || f.defaultValue !== undefined) return null;
      return 'This field is required';
    }
    if (f['enum'] && f['enum'].indexOf(v) < 0) return 'Choose one of: ' + f['enum'].join(', ');
    if (f.format === 'hostname' && !/^[a-zA-Z0-9.-]+$/.test(v)) return 'Invalid hostname';
    if (f.format === 'uuid' && !/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(v)) return 'Invalid UUID';
    if (f.format === 'uri') {
      try { new URL(v); } catch (e) { return 'Invalid URL'; }
    }
    if (f.format === 'email' && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v)) return 'Invalid email';
    if (f.pattern) {
      var re;
      try { re = new RegExp(f.pattern); } catch (e) { re = null; }
      if (re && !re.test(v)) return 'Incorrect ' + f.title;
    }
    return null;
  }

  // Every field's problem, by `group.name`; empty when the form is good.
  function problems(form, values) {
    var out = {};
    form.fields.forEach(function (f) {
      var key = f.group + '.' + f.name;
      var p = check(f, values[key]);
      if (p) out[key] = p;
    });
    return out;
  }

  function query(token, params, extra) {
    var q = ['connect_session_token=' + encodeURIComponent(token)];
    entries(params).forEach(function (e) {
      if (typeof e[1] === 'string') q.push('params[' + encodeURIComponent(e[0]) + ']=' + encodeURIComponent(e[1]));
    });
    entries(extra).forEach(function (e) {
      q.push(e[0] + '=' + encodeURIComponent(e[1]));
    });
    return '?' + q.join('&');
  }

  // The request that connects the form's values: `{popup: url}` for a
  // flow in the provider's window, else `{method, url, body}`, as the
  // frontend SDK sends each auth mode.
  function request(base, token, integration, form, values) {
    var credentials = {};
    var params = {};
    var assertion = {};
    form.fields.forEach(function (f) {
      // A preconfigured value is the session's, applied by the server.
      if (f.preset) return;
      var v = values[f.group + '.' + f.name];
      if (typeof v !== 'string' || v === '') {
        if (f.defaultValue === undefined) return;
        v = f.defaultValue;
      }
      if (f.group === 'credentials') credentials[f.name] = v;
      else if (f.group === 'params') params[f.name] = v;
      else assertion[f.name] = v;
    });
    var key = encodeURIComponent(integration.unique_key);
    var mode = form.mode;
    if (own(OWN_FIELDS, mode)) {
      var kept = {};
      OWN_FIELDS[mode].forEach(function (name) {
        if (own(credentials, name)) kept[name] = credentials[name];
      });
      // Basic credentials go as a pair, either part possibly empty
      // (a provider whose key is the username hides the password).
      if (mode === 'BASIC' || mode === 'SIGNATURE') {
        kept.username = kept.username || '';
        kept.password = kept.password || '';
      }
      credentials = kept;
    }
    if (POPUP_MODES.indexOf(mode) >= 0) {
      return { popup: base + '/oauth/connect/' + key + query(token, params) };
    }
    var path;
    var body = credentials;
    switch (mode) {
      case 'NONE': path = '/auth/unauthenticated/'; body = null; break;
      case 'API_KEY': path = '/api-auth/api-key/'; break;
      case 'BASIC': path = '/api-auth/basic/'; break;
      case 'OAUTH2_CC': path = '/oauth2/auth/'; break;
      case 'TWO_STEP':
        path = '/auth/two-step/';
        body = Object.assign({ type: 'TWO_STEP' }, credentials);
        if (Object.keys(assertion).length > 0) body.assertionOption = assertion;
        break;
      case 'JWT': path = '/auth/jwt/'; body = Object.assign({ type: 'JWT' }, credentials); break;
      case 'SIGNATURE': path = '/auth/signature/'; body = Object.assign({ type: 'SIGNATURE' }, credentials); break;
      case 'BILL': path = '/auth/bill/'; break;
      case 'TBA': path = '/auth/tba/'; break;
      default:
        return { unsupported: mode };
    }
    return { method: 'POST', url: base + path + key + query(token, params), body: body };
  }

  // The server's API with the session's token.
  function Client(base, token, fetchFn) {
    this.base = base;
    this.token = token;
    this.fetch = fetchFn || root.fetch.bind(root);
  }

  Client.prototype.get = function (path) {
    var self = this;
    return self.fetch(self.base + path, { headers: { Authorization: 'Bearer ' + self.token } }).then(answer);
  };

  Client.prototype.session = function () { return this.get('/connect/session'); };
  Client.prototype.integrations = function () { return this.get('/integrations'); };
  Client.prototype.provider = function (name) { return this.get('/providers/' + encodeURIComponent(name)); };

  // Sends what `request` built; resolves to `{connectionId, providerConfigKey}`.
  Client.prototype.connect = function (req) {
    var init = { method: req.method, headers: {} };
    if (req.body !== null && req.body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(req.body);
    }
    return this.fetch(req.url, init).then(answer);
  };

  function ApiFailure(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  function answer(res) {
    return res.text().then(function (text) {
      var json = null;
      try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
      if (!res.ok || (json && json.error)) {
        var err = json && json.error ? json.error : {};
        throw new ApiFailure(res.status, err.code || 'unknown_error', err.message || ('The server answered ' + res.status));
      }
      return json;
    });
  }

  var SluiceConnect = {
    apiBase: apiBase,
    fields: fields,
    check: check,
    problems: problems,
    request: request,
    Client: Client,
    POPUP_MODES: POPUP_MODES
  };
  root.SluiceConnect = SluiceConnect;

  // ---- the page ----
  if (typeof document === 'undefined' || !document.getElementById('sluice-connect')) return;

  var app = document.getElementById('sluice-connect');
  var embedded = root.parent && root.parent !== root;
  var search = new URLSearchParams(root.location.search);
  var base = apiBase(root.location.href);
  // `flow`: the provider's window waited on, cancelled when the user
  // leaves its form.
  var state = { client: null, session: null, single: false, dirty: false, flow: null };

  var theme = search.get('theme');
  if (theme === 'light' || theme === 'dark') document.documentElement.setAttribute('data-theme', theme);

  function tell(event) {
    if (embedded) root.parent.postMessage(event, '*');
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    entries(attrs).forEach(function (e) {
      if (e[0] === 'text') node.textContent = e[1];
      else if (e[0] === 'onclick') node.addEventListener('click', e[1]);
      else node.setAttribute(e[0], e[1]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function header(back) {
    var row = el('div', { 'class': 'bar' });
    if (back) row.appendChild(el('button', { 'class': 'link', type: 'button', text: '\u2190 Back', onclick: back }));
    else row.appendChild(el('span'));
    if (embedded) {
      row.appendChild(el('button', {
        'class': 'link', type: 'button', 'aria-label': 'Close', text: '\u2715',
        onclick: function () {
          if (state.dirty && !root.confirm('Are you sure you want to leave?')) return;
          tell({ type: 'close' });
        }
      }));
    }
    return row;
  }

  function cancel() {
    if (state.flow) state.flow();
    state.flow = null;
  }

  function show(nodes) {
    cancel();
    app.textContent = '';
    nodes.forEach(function (n) { if (n) app.appendChild(n); });
  }

  function message(title, text) {
    show([header(), el('main', { 'class': 'center' }, [el('h1', { text: title }), el('p', { 'class': 'muted', text: text })])]);
  }

  function failed(err) {
    var text = err && err.message ? err.message : String(err);
    message('Something went wrong', text);
  }

  // A token the app gives again (the SDK's `setSessionToken`) starts
  // over: the first may have ended.
  function start(token) {
    if (state.client && state.client.token === token) return;
    cancel();
    state.client = new Client(base, token);
    message('Loading\u2026', '');
    state.client.session().then(function (s) {
      state.session = s.data || {};
      return state.client.integrations();
    }).then(function (list) {
      var all = list.data || [];
      state.single = all.length === 1 && (state.session.allowed_integrations || []).length === 1;
      if (state.single) return choose(all[0]);
      pick(all);
    }).catch(failed);
  }

  function pick(all) {
    if (all.length === 0) {
      show([header(), el('main', { 'class': 'center' }, [
        el('h1', { text: 'No integration is available' }),
        el('p', { 'class': 'muted', text: 'There is nothing to connect yet.' }),
        embedded ? el('button', { type: 'button', 'class': 'primary', text: 'Close', onclick: function () { tell({ type: 'close' }); } }) : null
      ])]);
      return;
    }
    var items = all.map(function (i) {
      return el('li', {}, [el('button', {
        type: 'button', 'class': 'integration', text: i.display_name || i.unique_key,
        onclick: function () { choose(i).catch(failed); }
      })]);
    });
    show([header(), el('main', {}, [
      el('h1', { text: 'Select an integration' }),
      el('p', { 'class': 'muted', text: 'Pick the account you want to connect.' }),
      el('ul', { 'class': 'list' }, items)
    ])]);
  }

  function choose(integration) {
    return state.client.provider(integration.provider).then(function (p) {
      form(integration, p.data);
    });
  }

  function form(integration, provider) {
    var spec = fields(provider, integration, state.session);
    var inputs = {};
    var errors = {};
    var status = el('p', { 'class': 'error', role: 'alert' });
    var submit = el('button', { type: 'submit', 'class': 'primary', text: 'Connect' });
    var rows = spec.fields.filter(function (f) { return !f.hidden; }).map(function (f) {
      var key = f.group + '.' + f.name;
      var id = 'f-' + key.replace(/[^a-zA-Z0-9_-]/g, '_');
      var input;
      if (f['enum']) {
        input = el('select', { id: id }, [el('option', { value: '', text: '' })].concat(f['enum'].map(function (v) {
          return el('option', { value: v, text: v });
        })));
      } else {
        input = el('input', { id: id, type: f.secret ? 'password' : 'text', placeholder: f.example, autocomplete: 'off', spellcheck: 'false' });
      }
      if (f.defaultValue !== undefined) input.value = f.defaultValue;
      input.addEventListener('input', function () { state.dirty = true; errors[key].textContent = ''; });
      inputs[key] = input;
      errors[key] = el('span', { 'class': 'error' });
      var docs = provider.docs_connect && f.docSection ? el('a', { href: provider.docs_connect + f.docSection, target: '_blank', rel: 'noopener noreferrer', text: 'Where to find it' }) : null;
      return el('div', { 'class': 'field' }, [
        el('label', { 'for': id, text: f.title + (f.optional ? ' (optional)' : '') }),
        el('div', { 'class': 'input' }, [f.prefix ? el('span', { 'class': 'affix', text: f.prefix }) : null, input, f.suffix ? el('span', { 'class': 'affix', text: f.suffix }) : null]),
        f.description ? el('small', { 'class': 'muted', text: f.description }) : null,
        docs,
        errors[key]
      ]);
    });
    var name = integration.display_name || provider.display_name || integration.unique_key;
    var body = el('form', { novalidate: 'novalidate' }, rows.concat([status, submit]));
    body.addEventListener('submit', function (e) {
      e.preventDefault();
      var values = {};
      // As typed: a key or a password may hold spaces.
      Object.keys(inputs).forEach(function (k) { values[k] = inputs[k].value; });
      var bad = problems(spec, values);
      Object.keys(errors).forEach(function (k) { errors[k].textContent = bad[k] || ''; });
      if (Object.keys(bad).length > 0) return;
      go(integration, spec, values, submit, status);
    });
    show([
      header(state.single ? null : function () { state.client.integrations().then(function (l) { pick(l.data || []); }).catch(failed); }),
      el('main', {}, [
        el('h1', { text: (state.session.isReconnecting ? 'Reconnect ' : 'Link ') + name }),
        provider.docs_connect ? el('p', {}, [el('a', { href: provider.docs_connect, target: '_blank', rel: 'noopener noreferrer', text: 'How to connect ' + name })]) : null,
        body
      ])
    ]);
    if (spec.auto) submit.textContent = 'Connect with ' + name;
  }

  function done(integration, result) {
    state.dirty = false;
    var payload = { providerConfigKey: result.providerConfigKey || integration.unique_key, connectionId: result.connectionId };
    if (result.isPending) payload.isPending = true;
    tell({ type: 'connect', payload: payload });
    show([header(), el('main', { 'class': 'center' }, [
      el('h1', { text: 'Connected' }),
      el('p', { 'class': 'muted', text: 'Your account is connected.' + (embedded ? '' : ' You can close this page.') }),
      embedded ? el('button', { type: 'button', 'class': 'primary', text: 'Finish', onclick: function () { tell({ type: 'close' }); } }) : null
    ])]);
  }

  function refuse(status, submit, type, text) {
    submit.disabled = false;
    status.textContent = text;
    tell({ type: 'error', payload: { errorType: type, errorMessage: text } });
  }

  function go(integration, spec, values, submit, status) {
    var req = request(base, state.client.token, integration, spec, values);
    status.textContent = '';
    if (req.unsupported) {
      refuse(status, submit, 'unknown_error', 'Connecting ' + req.unsupported + ' accounts from the browser is not supported by this server.');
      return;
    }
    submit.disabled = true;
    if (!req.popup) {
      state.client.connect(req).then(function (result) { done(integration, result); }, function (err) {
        refuse(status, submit, err.code || 'unknown_error', err.message || String(err));
      });
      return;
    }
    // Opened in the click itself, or a browser blocks it.
    var win = root.open('', '_blank', 'width=520,height=680');
    if (!win) {
      refuse(status, submit, 'blocked_by_browser', 'The browser blocked the window. Allow pop-ups for this page and try again.');
      return;
    }
    var settled = false;
    var ws = new WebSocket(base.replace(/^http/, 'ws') + '/');
    var watch = null;
    function stop() {
      settled = true;
      state.flow = null;
      if (watch) clearInterval(watch);
      try { ws.close(); } catch (e) { /* closed */ }
      setTimeout(function () { try { win.close(); } catch (e) { /* gone */ } }, 500);
    }
    function finish(fn) {
      if (settled) return;
      stop();
      fn();
    }
    // Leaving the form ends the wait (and the window).
    state.flow = function () { if (!settled) stop(); };
    ws.onmessage = function (evt) {
      var data;
      try { data = JSON.parse(evt.data); } catch (e) { return; }
      if (data.message_type === 'connection_ack') {
        win.location.href = req.popup + '&ws_client_id=' + encodeURIComponent(data.ws_client_id);
      } else if (data.message_type === 'success') {
        finish(function () { done(integration, { providerConfigKey: data.provider_config_key, connectionId: data.connection_id, isPending: data.is_pending }); });
      } else if (data.message_type === 'error') {
        finish(function () { refuse(status, submit, data.error_type || 'unknown_error', data.error_desc || 'The connection failed.'); });
      }
    };
    ws.onerror = function () {
      finish(function () { refuse(status, submit, 'unknown_error', 'Lost the connection to the server.'); });
    };
    // Closed without a result (the server stopped, or the wait ran out).
    ws.onclose = function () {
      finish(function () { refuse(status, submit, 'unknown_error', 'The server stopped waiting for the authorization. Try again.'); });
    };
    watch = setInterval(function () {
      if (win.closed && search.get('detectClosedAuthWindow') === 'true') {
        finish(function () { refuse(status, submit, 'window_closed', 'The authorization window was closed before the authorization flow was completed'); });
      }
    }, 500);
  }

  root.addEventListener('message', function (evt) {
    if (!evt.data || typeof evt.data !== 'object') return;
    if (evt.data.type === 'session_token' && typeof evt.data.sessionToken === 'string' && evt.source === root.parent) {
      start(evt.data.sessionToken);
    } else if (evt.data.type === 'nango_oauth_callback_success' || evt.data.type === 'nango_oauth_callback_error') {
      // The flow's own page: told it was heard, it closes itself.
      try { evt.source.postMessage({ type: 'nango_oauth_callback_ack' }, evt.origin); } catch (e) { /* gone */ }
    }
  });
  tell({ type: 'ready' });
  var inUrl = search.get('session_token');
  if (inUrl) {
    start(inUrl);
  } else if (!embedded) {
    message('Nothing to connect', "This page can't be opened directly. Please start a connection from your application.");
  } else {
    setTimeout(function () {
      if (!state.client) message('Nothing to connect', 'The application gave no session.');
    }, 10000);
  }
})(typeof window !== 'undefined' ? window : globalThis);
