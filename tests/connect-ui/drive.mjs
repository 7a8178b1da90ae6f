// Drives sluice's Connect UI the way its page does, with the script the
// server serves (taken from `GET /connect`), in Node without a page: the
// session, the integrations it allows, each one's form from its
// provider, the checks on what the user typed, and the request that
// connects. Prints what it saw as one JSON document.
//
// node drive.mjs <server url> <session token> <plan.json>
// plan: [{name?, integration, values: {"credentials.apiKey": "…", "params.x": "…"}, send: bool}]
import { readFileSync } from 'node:fs';
import vm from 'node:vm';

const [base, token, planPath] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(planPath, 'utf8'));

const html = await (await fetch(`${base}/connect/`)).text();
const script = html.match(/<script>([\s\S]*?)<\/script>/)[1];
const context = { URL, URLSearchParams, fetch, console, setTimeout };
vm.createContext(context);
vm.runInContext(script, context);
const C = context.SluiceConnect;

// The page finds the API from its own address.
const api = C.apiBase(`${base}/connect/?session_token=${token}`);
const client = new C.Client(api, token);
const out = { api, results: {} };
const session = await client.session();
out.session = session.data;
const list = await client.integrations();
out.integrations = list.data.map((i) => i.unique_key);
for (const step of plan) {
  const integration = list.data.find((i) => i.unique_key === step.integration);
  const name = step.name || step.integration;
  if (!integration) {
    out.results[name] = { missing: true };
    continue;
  }
  const provider = (await client.provider(integration.provider)).data;
  const form = C.fields(provider, integration, session.data);
  const problems = C.problems(form, step.values);
  const req = C.request(api, token, integration, form, step.values);
  const result = {
    fields: form.fields.map((f) => ({ key: `${f.group}.${f.name}`, title: f.title, hidden: f.hidden, secret: f.secret, optional: f.optional })),
    auto: form.auto,
    problems,
    request: req
  };
  if (step.send && Object.keys(problems).length === 0 && req.url) {
    try {
      result.connected = await client.connect(req);
    } catch (err) {
      result.refused = { status: err.status, code: err.code, message: err.message };
    }
  }
  out.results[name] = result;
}
console.log(JSON.stringify(out));
