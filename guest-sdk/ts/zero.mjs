// The zero-yaml half of `compile.mjs`: the original's source checks on a
// script's files (and the nango.yaml era's: `lintYamlScript`), and its
// definition (what `createSync`/`createAction`/`createOnEvent` were given)
// read by loading the script in Node, with the models' JSON schema from
// zod 4. ../../shared/nango-zero.md §4 describes what the original does;
// messages are its own.

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SDK = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

/** Calls on `nango` that must be awaited (§4.5). */
const MUST_AWAIT = new Set([
    'batchDelete',
    'batchSave',
    'batchSend',
    'delete',
    'deleteRecordsFromPreviousExecutions',
    'get',
    'getConnection',
    'getEnvironmentVariables',
    'getFieldMapping',
    'getMetadata',
    'log',
    'patch',
    'post',
    'proxy',
    'put',
    'setFieldMapping',
    'setMergingStrategy',
    'setMetadata',
    'trackDeletesEnd',
    'trackDeletesStart',
    'triggerAction'
]);
const BATCHING = new Set(['batchSave', 'batchDelete', 'batchUpdate']);
const PROXY_VERBS = new Set(['proxy', 'get', 'post', 'put', 'patch', 'delete']);
const HELPERS = new Set(['createSync', 'createAction', 'createOnEvent', 'createFunction']);

function lineOf(text, offset) {
    let line = 1;
    for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
    return line;
}

/** Every node with its ancestors, depth first. */
function walk(node, visit, parents = []) {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) {
        for (const n of node) walk(n, visit, parents);
        return;
    }
    if (typeof node.type === 'string') visit(node, parents);
    const next = typeof node.type === 'string' ? [...parents, node] : parents;
    for (const [k, v] of Object.entries(node)) {
        if (k === 'start' || k === 'end' || k === 'type') continue;
        if (v && typeof v === 'object') walk(v, visit, next);
    }
}

function nangoCall(node) {
    if (node.type !== 'CallExpression') return undefined;
    let c = node.callee;
    while (c?.type === 'ParenthesizedExpression') c = c.expression;
    // `nango?.log()` is an optional call, which the original's visitor
    // (Babel's CallExpression) does not see.
    if (node.optional || c?.optional) return undefined;
    if (c?.type !== 'MemberExpression' || c.computed) return undefined;
    let object = c.object;
    while (object?.type === 'ParenthesizedExpression') object = object.expression;
    if (object?.type !== 'Identifier' || object.name !== 'nango') return undefined;
    return c.property?.name;
}

/**
 * Whether a `nango.x()` call passes the original's await rule: some
 * ancestor, however far up (across functions too), is an `await`, a
 * `.then`/`.catch` member or a `return` statement. So `await
 * Promise.all(ids.map(async (id) => { nango.log(id); }))` passes and
 * `const p = nango.get(...); await p;` does not, as in the original.
 */
function handled(parents) {
    return parents.some(
        (p) =>
            p.type === 'AwaitExpression' ||
            p.type === 'ReturnStatement' ||
            (p.type === 'MemberExpression' && p.property?.type === 'Identifier' && (p.property.name === 'then' || p.property.name === 'catch'))
    );
}

/**
 * The original's checks on one source file (§4.4, §4.5); `entry` adds the
 * export and ordering rules; `allowed` lists the packages a value import
 * may name.
 */
export async function checkSource(file, root, entry, allowed) {
    const { parseSync } = await import('oxc-parser');
    const text = await readFile(file, 'utf8');
    const where = relative(root, file);
    const errors = [];
    const err = (offset, message) => errors.push({ file: where, line: lineOf(text, offset), message });
    const parsed = parseSync(file, text, { sourceType: 'module' });
    if (parsed.errors.length > 0) {
        for (const e of parsed.errors) err(e.labels?.[0]?.start ?? 0, e.message);
        return errors;
    }
    const program = parsed.program;
    // The import allow-list on the source as written: the bundler drops an
    // import nothing uses before its check would see it.
    for (const st of program.body) {
        const from = st.source?.value;
        if (typeof from !== 'string' || from.startsWith('.') || from.startsWith('/')) continue;
        if (!['ImportDeclaration', 'ExportNamedDeclaration', 'ExportAllDeclaration'].includes(st.type)) continue;
        if (st.importKind === 'type' || st.exportKind === 'type') continue;
        const specifiers = st.specifiers ?? [];
        if (specifiers.length > 0 && specifiers.every((sp) => sp.importKind === 'type' || sp.exportKind === 'type')) continue;
        const parts = from.split('/');
        const pkg = from.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
        if (allowed.includes(from) || allowed.includes(pkg)) continue;
        err(st.start, `Import of package '${pkg}' is not allowed. Allowed packages are: ${allowed.join(', ')} (in "${where}")`);
    }
    walk(program, (node, parents) => {
        const m = nangoCall(node);
        if (m === undefined) return;
        if (MUST_AWAIT.has(m) && !handled(parents)) {
            err(node.start, `nango.${m}() calls must be awaited in "${where}". Not awaiting can lead to unexpected results.`);
        }
        const arg = node.arguments?.[0];
        if (arg?.type === 'ObjectExpression') {
            const keys = arg.properties.filter((p) => p.type === 'Property' && !p.computed).map((p) => p.key?.name ?? p.key?.value);
            if (keys.includes('retryOn') && !keys.includes('retries')) {
                err(node.start, "Proxy call: 'retryOn' should not be used if 'retries' is not set.");
            }
        }
    });
    if (!entry) return errors;

    // Exports: a default export built with a helper, no other value exports.
    const consts = new Map();
    for (const st of program.body) {
        const decl = st.type === 'ExportNamedDeclaration' ? st.declaration : st;
        if (decl?.type === 'VariableDeclaration' && decl.kind === 'const') {
            for (const d of decl.declarations) if (d.id?.type === 'Identifier') consts.set(d.id.name, d.init);
        }
    }
    const helperCall = (expr) => {
        if (expr?.type !== 'CallExpression' || expr.callee?.type !== 'Identifier' || !HELPERS.has(expr.callee.name)) return undefined;
        return expr;
    };
    let exec;
    let sawDefault = false;
    for (const st of program.body) {
        if (st.type === 'ExportDefaultDeclaration') {
            sawDefault = true;
            let call = helperCall(st.declaration);
            if (!call && st.declaration?.type === 'Identifier') call = helperCall(consts.get(st.declaration.name));
            if (!call) {
                err(st.start, 'Invalid default export: should be createAction(), createSync() or createOnEvent()');
                continue;
            }
            const arg = call.arguments[0];
            if (arg?.type !== 'ObjectExpression') {
                err(call.start, 'Invalid function parameter, should be an object');
                continue;
            }
            exec = arg.properties.find((p) => p.type === 'Property' && (p.key?.name ?? p.key?.value) === 'exec')?.value;
        } else if (st.type === 'ExportNamedDeclaration' && st.exportKind !== 'type' && !st.source) {
            const names = [];
            const d = st.declaration;
            if (d?.type === 'VariableDeclaration') for (const v of d.declarations) names.push(v.id?.name);
            else if (d?.id?.name && !d.type.startsWith('TS')) names.push(d.id.name);
            for (const sp of st.specifiers ?? []) if (sp.exportKind !== 'type') names.push(sp.exported?.name);
            for (const n of names) {
                if (n && !HELPERS.has(n)) {
                    err(st.start, `Named export '${n}' is not allowed. Only export default and type exports are permitted.`);
                }
            }
        }
    }
    if (!sawDefault) err(0, 'Invalid default export: should be createAction(), createSync() or createOnEvent()');

    // Ordering inside `exec`, by source line.
    if (exec) {
        const calls = [];
        walk(exec, (node) => {
            const m = nangoCall(node);
            if (m === undefined) return;
            const a = node.arguments?.[0];
            const model = a?.type === 'Literal' && typeof a.value === 'string' ? a.value : undefined;
            calls.push({ m, line: node.start, start: node.start, model });
        });
        const lines = (pred) => calls.filter(pred).map((c) => c.line);
        const batching = lines((c) => BATCHING.has(c.m));
        const proxies = lines((c) => PROXY_VERBS.has(c.m));
        for (const c of calls.filter((c) => c.m === 'setMergingStrategy')) {
            if (batching.some((l) => l < c.line) || proxies.some((l) => l < c.line)) {
                err(c.start, 'setMergingStrategy should be called before any batching records function or proxy call');
            }
        }
        const dr = calls.filter((c) => c.m === 'deleteRecordsFromPreviousExecutions');
        if (dr.length > 1) err(dr[1].start, 'deleteRecordsFromPreviousExecutions should be called at most once');
        for (const c of dr) {
            if (batching.some((l) => l > c.line)) err(c.start, 'deleteRecordsFromPreviousExecutions should be called after any batching records function');
        }
        const models = new Set(calls.filter((c) => c.m === 'trackDeletesStart' || c.m === 'trackDeletesEnd').map((c) => c.model));
        for (const model of models) {
            if (model === undefined) continue;
            const starts = calls.filter((c) => c.m === 'trackDeletesStart' && c.model === model);
            const ends = calls.filter((c) => c.m === 'trackDeletesEnd' && c.model === model);
            if (starts.length > 1) err(starts[1].start, `trackDeletesStart for model '${model}' should be called at most once`);
            if (ends.length > 1) err(ends[1].start, `trackDeletesEnd for model '${model}' should be called at most once`);
            if (starts.length === 0) err(ends[0].start, `trackDeletesEnd for model '${model}' is called without trackDeletesStart`);
            if (ends.length === 0) err(starts[0].start, `trackDeletesStart for model '${model}' is called without trackDeletesEnd`);
            const s = starts[0];
            const e = ends[0];
            if (s && e && s.line > e.line) err(e.start, `trackDeletesStart for model '${model}' should be called before trackDeletesEnd`);
            if (s && batching.some((l) => l < s.line)) err(s.start, `trackDeletesStart for model '${model}' should be called before any batching records function`);
            if (e && batching.some((l) => l > e.line)) err(e.start, `trackDeletesEnd for model '${model}' should be called after any batching records function`);
        }
    }
    return errors;
}

// ------ The nango.yaml era's checks

/** Calls the yaml era's CLI wants awaited (a shorter list than §4.5's). */
const YAML_MUST_AWAIT = new Set([
    'batchSend',
    'batchSave',
    'batchDelete',
    'log',
    'getFieldMapping',
    'setFieldMapping',
    'getMetadata',
    'setMetadata',
    'proxy',
    'get',
    'post',
    'put',
    'patch',
    'delete',
    'getConnection',
    'getEnvironmentVariables',
    'triggerAction'
]);
const YAML_DEPRECATED = { batchSend: 'batchSave', getFieldMapping: 'getMetadata', setFieldMapping: 'setMetadata' };

const FUNCTION_TYPES = new Set(['FunctionDeclaration', 'FunctionExpression', 'ArrowFunctionExpression']);

/** Whether a function returns a value, its nested functions left out. */
function returnsValue(fn) {
    let found = false;
    const visit = (node) => {
        if (found || !node || typeof node !== 'object') return;
        if (Array.isArray(node)) return node.forEach(visit);
        if (FUNCTION_TYPES.has(node.type)) return;
        if (node.type === 'ReturnStatement' && node.argument) {
            found = true;
            return;
        }
        for (const [k, v] of Object.entries(node)) if (k !== 'type' && v && typeof v === 'object') visit(v);
    };
    if (fn.body?.type === 'BlockStatement') visit(fn.body.body);
    return found;
}
/**
 * The nango.yaml era's checks on a script's file and, with the same script
 * kind, on the project files it imports (the original CLI's
 * `callsAreUsedCorrectly`, nango-surface.md §6): SDK calls awaited, no
 * record batching in an action, a model named by a batching call declared
 * in nango.yaml, `retryOn` only with `retries`, a sync's `fetchData`
 * returning nothing, `setMergingStrategy` first. `kind` is `sync`,
 * `action` or `on-event`; `models` every model name of the nango.yaml.
 * Messages are the original's; deprecated calls are warnings.
 */
export async function lintYamlScript(file, root, kind, models, seen = new Set()) {
    const errors = [];
    const warnings = [];
    if (seen.has(file)) return { errors, warnings };
    seen.add(file);
    const { parseSync } = await import('oxc-parser');
    let text;
    try {
        text = await readFile(file, 'utf8');
    } catch {
        return { errors, warnings };
    }
    const where = relative(root, file);
    const parsed = parseSync(file, text, { sourceType: 'module' });
    // A syntax error is the bundler's to name, with its place.
    if (parsed.errors.length > 0) return { errors, warnings };
    const program = parsed.program;
    const at = (offset) => ({ file: where, line: lineOf(text, offset) });
    const err = (offset, message) => errors.push({ ...at(offset), message });
    const proxies = [];
    const batching = [];
    const merging = [];
    walk(program, (node, parents) => {
        const m = nangoCall(node);
        if (m === undefined) return;
        const line = lineOf(text, node.start);
        if (YAML_DEPRECATED[m]) {
            warnings.push({ ...at(node.start), message: `nango.${m}() used at line ${line} is deprecated. Use nango.${YAML_DEPRECATED[m]}() instead.` });
        }
        if (kind === 'action' && (BATCHING.has(m) || m === 'batchSend')) {
            err(node.start, `nango.${m}() calls are not allowed in an action script. Please remove it at "${where}:${line}".`);
        }
        if (YAML_MUST_AWAIT.has(m) && !handled(parents)) {
            err(node.start, `nango.${m}() calls must be awaited in "${where}:${line}". Not awaiting can lead to unexpected results.`);
        }
        const args = node.arguments ?? [];
        if ((BATCHING.has(m) || m === 'setMergingStrategy') && args.length > 1) {
            const last = args[args.length - 1];
            if (last.type === 'Literal' && typeof last.value === 'string' && !models.includes(last.value)) {
                err(
                    node.start,
                    `"${last.value}" is not a valid model name. Please check "${where}:${line}". The possible model names are: ${models.join(', ')}`
                );
            }
        }
        if (args[0]?.type === 'ObjectExpression') {
            const keys = args[0].properties.filter((p) => p.type === 'Property' && !p.computed).map((p) => p.key?.name);
            if (keys.includes('retryOn') && !keys.includes('retries')) {
                err(node.start, `Usage of 'retryOn' without 'retries' at "${where}:${line}". 'retryOn' should not be used if 'retries' is not set.`);
            }
        }
        if (PROXY_VERBS.has(m)) proxies.push(line);
        if (BATCHING.has(m)) batching.push(line);
        if (m === 'setMergingStrategy') merging.push(line);
    });
    if (kind === 'sync') {
        for (const st of program.body) {
            const fn = st.type === 'ExportDefaultDeclaration' ? st.declaration : undefined;
            if (fn && FUNCTION_TYPES.has(fn.type) && returnsValue(fn)) {
                err(
                    fn.start,
                    `The default exported function fetchData at "${where}:${lineOf(text, fn.start)}" must not return a value. Sync scripts should not return but rather use batchSave to save data.`
                );
            }
        }
    }
    if (merging.length > 0) {
        const first = Math.min(...merging);
        if (batching.length > 0 && merging.some((l) => l > Math.min(...batching))) {
            errors.push({ file: where, line: first, message: `setMergingStrategy should be called before any batching records function in "${where}:${first}".` });
        }
        if (proxies.length > 0 && merging.some((l) => l > Math.min(...proxies))) {
            errors.push({ file: where, line: first, message: `setMergingStrategy should be called before any proxy function in "${where}:${first}".` });
        }
    }
    // The project files it imports, checked as part of the same script.
    // Followed as the original follows them: an import naming a value
    // with braces, or naming nothing (`import './x'`); not a default or
    // namespace import.
    for (const st of program.body) {
        if (st.type !== 'ImportDeclaration' || st.importKind === 'type') continue;
        const specifiers = st.specifiers ?? [];
        const named = specifiers.some((sp) => sp.type === 'ImportSpecifier' && sp.importKind !== 'type');
        if (specifiers.length > 0 && !named) continue;
        const from = st.source?.value;
        if (typeof from !== 'string' || !from.startsWith('.')) continue;
        const target = resolve(dirname(file), from).replace(/\.js$/, '');
        const ts = target.endsWith('.ts') ? target : `${target}.ts`;
        if (ts.endsWith('models.ts') || !ts.startsWith(resolve(root) + sep)) continue;
        const more = await lintYamlScript(ts, root, kind, models, seen);
        errors.push(...more.errors);
        warnings.push(...more.warnings);
    }
    return { errors, warnings };
}

// ------ Definitions

const PHRASES = {
    'every half day': 12 * 3600e3,
    'every half hour': 30 * 60e3,
    'every quarter hour': 15 * 60e3,
    'every hour': 3600e3,
    'every day': 86400e3,
    'every month': 30 * 86400e3,
    'every week': 7 * 86400e3
};
const UNITS = [
    [/^(years?|yrs?|y)$/i, 365.25 * 86400e3],
    [/^(months?|mo)$/i, (365.25 / 12) * 86400e3],
    [/^(weeks?|w)$/i, 7 * 86400e3],
    [/^(days?|d)$/i, 86400e3],
    [/^(hours?|hrs?|h)$/i, 3600e3],
    [/^(minutes?|mins?|m)$/i, 60e3],
    [/^(seconds?|secs?|s)$/i, 1e3],
    [/^(milliseconds?|msecs?|ms)$/i, 1]
];

/**
 * The frequency in milliseconds (§4.7), or undefined when invalid, as the
 * original's compile reads it: the phrases exactly as written, else the
 * first `every ` removed and the rest read by `ms` (whose units are
 * case-insensitive, with no space around the value).
 */
export function frequencyMs(text) {
    if (typeof text !== 'string') return undefined;
    if (Object.hasOwn(PHRASES, text)) return PHRASES[text];
    const rest = text.replace('every ', '');
    if (rest.length > 100) return undefined;
    const m = /^(-?\d*\.?\d+) *([a-z]*)$/i.exec(rest);
    if (!m) return undefined;
    const n = parseFloat(m[1]);
    const unit = m[2] || 'ms';
    const found = UNITS.find(([re]) => re.test(unit));
    if (!found) return undefined;
    return n * found[1];
}

function modelKey(id) {
    return id.replace(/[^a-zA-Z0-9]/g, '_');
}
function scriptKey(name) {
    return name.replace(/[^a-zA-Z0-9]/g, '');
}

function jsonSchema(z, schema) {
    const out = z.toJSONSchema(schema, {
        target: 'draft-7',
        unrepresentable: 'any',
        override: (ctx) => {
            const def = ctx.zodSchema?._zod?.def;
            if (def?.type === 'date') {
                for (const k of Object.keys(ctx.jsonSchema)) delete ctx.jsonSchema[k];
                Object.assign(ctx.jsonSchema, { type: 'string', format: 'date-time' });
            } else if (def?.type === 'void') {
                for (const k of Object.keys(ctx.jsonSchema)) delete ctx.jsonSchema[k];
                Object.assign(ctx.jsonSchema, { type: 'null' });
            }
        }
    });
    delete out.$schema;
    return out;
}

function isZod(v) {
    return v && typeof v === 'object' && v._zod !== undefined;
}

/**
 * Loads one bundled script (CommonJS text) and turns its default export
 * into the original's definition; throws an Error naming the rule.
 */
export function definition({ code, file, name, integration, zodPath }) {
    const z = require(zodPath);
    const mod = { exports: {} };
    const req = (spec) => {
        if (spec === 'zod' || spec.startsWith('zod/')) return require(zodPath);
        if (['crypto', 'node:crypto', 'url', 'node:url'].includes(spec)) return require(spec);
        throw new Error(`Module '${spec}' is not allowed`);
    };
    new Function('module', 'exports', 'require', '__filename', '__dirname', code)(mod, mod.exports, req, file, dirname(file));
    const def = mod.exports.default;
    const fail = (field, message) => {
        const e = new Error(field ? `${field} > ${message}` : message);
        e.rule = true;
        throw e;
    };
    if (def === undefined) fail(undefined, `Script should have a default export ${file}`);
    if (!['action', 'sync', 'onEvent', 'function'].includes(def?.type)) {
        fail(undefined, `Script should be declared using utility function (createSync, createAction, createOnEvent) ${file}`);
    }
    const helper = { sync: 'createSync', action: 'createAction', onEvent: 'createOnEvent' }[def.type];
    if (helper && typeof def.exec !== 'function') {
        fail(`${helper} > exec`, `must be a function (the script's body: exec: async (nango) => { ... }), got ${typeof def.exec}`);
    }
    const I = modelKey(integration);
    const S = scriptKey(name);
    const features = [];
    if (def.type === 'sync') {
        const ms = frequencyMs(def.frequency);
        if (ms === undefined || !(ms >= 30e3)) fail('createSync > frequency', 'Interval is invalid, check syntax here https://github.com/vercel/ms');
        const models = Object.entries(def.models ?? {});
        const endpoints = Array.isArray(def.endpoints) ? def.endpoints : [];
        if (def.endpoints && endpoints.length !== models.length) {
            fail('createSync > endpoints', "The number of endpoints doesn't match the number of models. You need as many endpoints as models");
        }
        if (def.syncType === 'incremental' && def.trackDeletes === true) fail('createSync > trackDeletes', 'Track deletes is not supported for incremental syncs');
        const seen = new Set();
        for (const e of endpoints) {
            const key = `${e.method} ${e.path}`;
            if (seen.has(key)) fail('createSync > endpoints', `Endpoint "${key}" is used multiple times. Endpoints must be unique`);
            seen.add(key);
        }
        const definitions = {};
        for (const [model, schema] of models) {
            if (!/^[A-Z][a-zA-Z0-9_]+$/.test(model)) {
                fail('createSync > models', `Model "${model}" contains invalid characters. It should start with an uppercase and only contains alphanumeric characters`);
            }
            if (!isZod(schema)) fail('createSync > models', `Model "${model}" is not a zod schema`);
            definitions[model] = jsonSchema(z, schema);
        }
        let input = null;
        if (isZod(def.metadata)) {
            input = `SyncMetadata_${I}_${S}`;
            definitions[input] = jsonSchema(z, def.metadata);
        }
        return {
            kind: 'sync',
            definition: {
                type: 'sync',
                description: def.description ?? '',
                auto_start: def.autoStart === true,
                endpoints,
                input,
                name,
                output: models.map(([m]) => m),
                runs: def.frequency,
                scopes: def.scopes ?? [],
                sync_type: def.syncType === 'incremental' ? 'incremental' : 'full',
                track_deletes: def.trackDeletes === true,
                usedModels: Object.keys(definitions),
                version: def.version ?? '',
                webhookSubscriptions: def.webhookSubscriptions ?? [],
                json_schema: { definitions },
                features
            },
            warnings: def.trackDeletes === true ? ['trackDeletes is deprecated: call nango.trackDeletesStart/End in exec instead'] : []
        };
    }
    if (def.type === 'action') {
        const input = `ActionInput_${I}_${S}`;
        const output = `ActionOutput_${I}_${S}`;
        const definitions = {};
        definitions[input] = isZod(def.input) ? jsonSchema(z, def.input) : {};
        definitions[output] = isZod(def.output) ? jsonSchema(z, def.output) : {};
        return {
            kind: 'action',
            definition: {
                type: 'action',
                description: def.description ?? '',
                endpoint: def.endpoint ?? null,
                input,
                name,
                output: [output],
                scopes: def.scopes ?? [],
                usedModels: [input, output],
                version: def.version ?? '',
                json_schema: { definitions },
                features
            },
            warnings: []
        };
    }
    if (def.type === 'onEvent') {
        const events = ['post-connection-creation', 'pre-connection-deletion', 'validate-connection'];
        if (!events.includes(def.event)) fail('createOnEvent > event', `event must be one of ${events.join(', ')}`);
        return { kind: 'onEvent', event: def.event, definition: { name }, warnings: [] };
    }
    return { kind: 'function', warnings: ['createFunction is experimental: compiled but not deployed or run by sluice'] };
}

/** The zod module (a path Node can `require`) zero-yaml scripts get. */
export async function zodModule(root) {
    for (let dir = resolve(root); ; dir = dirname(dir)) {
        try {
            const pkg = JSON.parse(await readFile(join(dir, 'node_modules/zod/package.json'), 'utf8'));
            if (Number(String(pkg.version).split('.')[0]) >= 4) return join(dir, 'node_modules/zod');
        } catch {
            // not here
        }
        if (dirname(dir) === dir) return join(SDK, 'node_modules/zod4');
    }
}
