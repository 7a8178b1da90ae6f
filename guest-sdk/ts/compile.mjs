#!/usr/bin/env node
// Turns an integration's TypeScript scripts into one WebAssembly component.
// sluice runs this; it is not meant to be called by hand.
//
//   compile.mjs bundle        < job.json   bundles the scripts with esbuild
//   compile.mjs componentize  < job.json   bundle.js -> component (componentize-js)
//   compile.mjs definitions   < job.json   zero-yaml: checks and bundles each entry for Node
//   compile.mjs load          < job.json   zero-yaml: runs those bundles to read their
//                                          definitions (sluice runs it sandboxed)
//   compile.mjs migrate       < job.json   nango.yaml -> zero-yaml sources
//
// job.json:
//   { "root": "/project",                 // the nango-integrations folder
//     "scripts": [{ "name": "contacts", "file": "/project/hubspot/syncs/contacts.ts" }],
//     "bundle": "/project/.sluice/build/hubspot.js",
//     "component": "/project/.sluice/build/hubspot.wasm",
//     "wit": "/tmp/…/wit" }
//
// Each prints one JSON line: { "ok": true } or { "ok": false, "errors": [{ "file", "line", "message" }] }.

import { existsSync } from 'node:fs';
import { lstat, readdir, readFile, readlink, realpath, writeFile, mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SDK = dirname(fileURLToPath(import.meta.url));

/** Packages the original platform lets scripts import, and what sluice gives them. */
const BUILTINS = {
    crypto: join(SDK, 'src/node/crypto.ts'),
    'node:crypto': join(SDK, 'src/node/crypto.ts'),
    url: join(SDK, 'src/node/url.ts'),
    'node:url': join(SDK, 'src/node/url.ts'),
    buffer: 'buffer',
    'node:buffer': 'buffer'
};
/** The name of the generated entry module (it exists only in memory). */
const ENTRY = 'sluice-entry.js';
/** Allowed by the original, but they need Node's network and filesystem. */
const UNSUPPORTED = new Set(['botbuilder', 'soap', 'unzipper']);

/** What a zero-yaml project may import (the original's allow-list). */
const ZERO_ALLOWED = ['nango', 'nango/experimental', 'zod', 'crypto', 'node:crypto', 'url', 'node:url', 'unzipper', 'soap', 'botbuilder'];

/** The project's own zod when it is zod 4, else the SDK's zod 4. */
async function zodFor(root) {
    for (let dir = root; ; dir = dirname(dir)) {
        try {
            const pkg = JSON.parse(await readFile(join(dir, 'node_modules/zod/package.json'), 'utf8'));
            if (Number(String(pkg.version).split('.')[0]) >= 4) return { dir, name: 'zod' };
        } catch {
            // not here
        }
        if (dirname(dir) === dir) return { dir: SDK, name: 'zod4' };
    }
}

/** `nango` is the SDK's zero-yaml module, `zod` is zod 4. */
async function resolveZero(build, root, args) {
    if (args.path === 'nango' || args.path === 'nango/experimental') return { path: join(SDK, 'src/zero.ts') };
    if (args.path === 'zod' || args.path.startsWith('zod/')) {
        const z = await zodFor(root);
        const r = await build.resolve(z.name + args.path.slice(3), { resolveDir: z.dir, kind: args.kind, pluginData: 'sluice' });
        if (r.errors.length > 0) return { errors: r.errors };
        return { path: r.path };
    }
    return undefined;
}

/**
 * A stand-in for a package sluice cannot run: loading works, calling it or
 * any of its members throws. A test may replace members (vi.spyOn, or
 * vi.mock of the package, which finds the stand-in by name), as it would
 * on the real package.
 */
function unsupportedModule(pkg) {
    const message = `"${pkg}" needs Node's network and filesystem, which sluice scripts do not have (use nango.proxy for HTTP)`;
    // CommonJS, so that any named import of it resolves (to a use that throws).
    // Its members throw when called, however deep (a class of it constructs
    // an object that does nothing: the call that needs the network is what
    // fails).
    // Named imports read through the namespace's prototype, so they see
    // members a test replaced after the bundle loaded.
    return `const fail = () => { throw new Error(${JSON.stringify(message)}); };
const inert = (k) => k === 'then' || typeof k === 'symbol';
const member = new Proxy(function () {}, { get: (_t, k) => (inert(k) ? undefined : member), apply: fail, construct: () => member });
const own = Object.create(null);
const read = (k) => (k in own ? own[k] : k === '__esModule' || inert(k) ? undefined : member);
const names = new Proxy(Object.create(null), { get: (_t, k) => read(k) });
const stub = new Proxy(function () {}, {
    get: (_t, k) => read(k),
    set: (_t, k, v) => ((own[k] = v), true),
    deleteProperty: (t, k) => (k in own ? delete own[k] : Reflect.deleteProperty(t, k)),
    has: (t, k) => k in own || k in t,
    getOwnPropertyDescriptor: (t, k) =>
        k in own ? { value: own[k], writable: true, enumerable: true, configurable: true } : Reflect.getOwnPropertyDescriptor(t, k),
    getPrototypeOf: () => names,
    apply: fail,
    construct: fail
});
(globalThis.__sluiceStubs ??= new Map()).set(${JSON.stringify(pkg)}, stub);
module.exports = stub;`;
}

function packageName(spec) {
    const parts = spec.split('/');
    return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

function inside(root, file) {
    const rel = relative(root, file);
    return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/** What a test file written by hand may import besides the project's own files. */
const TEST_MODULES = {
    vitest: join(SDK, 'src/vitest.ts'),
    fs: join(SDK, 'src/node/test-fs.ts'),
    'node:fs': join(SDK, 'src/node/test-fs.ts'),
    'fs/promises': join(SDK, 'src/node/test-fs.ts'),
    'node:fs/promises': join(SDK, 'src/node/test-fs.ts'),
    path: join(SDK, 'src/node/test-path.ts'),
    'node:path': join(SDK, 'src/node/test-path.ts')
};

function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Enforces the original's import rules on the project's own files. */
function importPolicy(root, zero, tests = []) {
    const sdkDir = SDK + sep;
    const entry = join(root, ENTRY);
    const testFiles = new Set(tests.map((t) => resolve(t.file)));
    const testDirs = new Set([...testFiles].map((f) => dirname(f)));
    return {
        name: 'sluice-imports',
        setup(build) {
            build.onResolve({ filter: /.*/ }, async (args) => {
                if (args.kind === 'entry-point' || args.pluginData === 'sluice') return undefined;
                if (args.path.startsWith('nango:')) return { path: args.path, external: true };
                if (args.path.startsWith('sluice-scope:')) return { path: args.path.slice('sluice-scope:'.length), namespace: 'sluice-scope' };
                if (args.namespace === 'sluice-scope') return undefined;
                if (args.path.startsWith('sluice-test:')) return { path: args.path.slice('sluice-test:'.length), namespace: 'sluice-test' };
                if (args.namespace === 'sluice-test') return undefined;
                // The test files and what they import from their own folder.
                if (args.path in TEST_MODULES && (testFiles.has(args.importer) || testDirs.has(dirname(args.importer)))) {
                    return { path: TEST_MODULES[args.path] };
                }
                // The generated entry imports the SDK and the scripts themselves.
                if (args.importer === entry) return undefined;
                const fromProject = !args.importer.startsWith(sdkDir) && !args.importer.includes(`${sep}node_modules${sep}`);
                if (!fromProject) return undefined;
                const where = relative(root, args.importer);
                if (args.path.startsWith('.') || isAbsolute(args.path)) {
                    const target = resolve(args.resolveDir, args.path);
                    if (!inside(root, target)) {
                        return {
                            errors: [{ text: `All imported files must live within the nango-integrations directory: "${args.path}" in "${where}" points outside it` }]
                        };
                    }
                    return undefined;
                }
                if (zero) {
                    const z = await resolveZero(build, root, args);
                    if (z) return z;
                }
                if (args.path in BUILTINS) {
                    const to = BUILTINS[args.path];
                    if (to === 'buffer') {
                        const r = await build.resolve('buffer', { resolveDir: SDK, kind: args.kind, pluginData: 'sluice' });
                        return { path: r.path };
                    }
                    return { path: to };
                }
                const pkg = packageName(args.path);
                if (pkg === 'zod') return undefined;
                if (zero && UNSUPPORTED.has(pkg)) return { path: pkg, namespace: 'sluice-unsupported' };
                if (UNSUPPORTED.has(pkg)) {
                    return {
                        errors: [
                            {
                                text: `The import "${args.path}" in "${where}" is allowed by Nango but not by sluice: "${pkg}" needs Node's network and filesystem, which scripts do not have (use nango.proxy for HTTP)`
                            }
                        ]
                    };
                }
                if (zero) {
                    return { errors: [{ text: `Import of package '${pkg}' is not allowed. Allowed packages are: ${ZERO_ALLOWED.join(', ')} (in "${where}")` }] };
                }
                return { errors: [{ text: `Importing libraries is not allowed. Please remove the import "${args.path}" from "${where}"` }] };
            });
            build.onLoad({ filter: /.*/, namespace: 'sluice-unsupported' }, (args) => ({
                contents: unsupportedModule(args.path),
                loader: 'js'
            }));
            build.onLoad({ filter: /.*/, namespace: 'sluice-test' }, (args) => ({
                contents: `import { vitestFile } from ${JSON.stringify(join(SDK, 'src/vitest.ts'))};\nvitestFile(${JSON.stringify(args.path)});\n`,
                resolveDir: SDK,
                loader: 'js'
            }));
            if (testFiles.size > 0) {
                // A test file sees vitest's module globals (on its first line:
                // the file's lines stay where they are).
                const filter = new RegExp(`^(${[...testFiles].map(escapeRegExp).join('|')})$`);
                build.onLoad({ filter }, async (args) => {
                    const text = await readFile(args.path, 'utf8');
                    // Each only where the file does not declare it itself.
                    // (at its top level: unindented, as formatted code has it)
                    const declared = (name) => new RegExp(`^(export\\s+)?(const|let|var|function|class)\\s+${name}\\b`, 'm').test(text);
                    const globals = [
                        ['__dirname', JSON.stringify(dirname(args.path))],
                        ['__filename', JSON.stringify(args.path)],
                        ['global', 'globalThis']
                    ]
                        .filter(([name]) => !declared(name))
                        .map(([name, value]) => `const ${name} = ${value};`)
                        .join(' ');
                    // Its own URL, as in Node (the bundle has no file of its own).
                    const own = text.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href));
                    return { contents: globals + own, loader: 'ts' };
                });
            }
            build.onLoad({ filter: /.*/, namespace: 'sluice-scope' }, (args) => ({
                contents: `import { vitestScope } from ${JSON.stringify(join(SDK, 'src/harness.ts'))};\nvitestScope(${JSON.stringify(args.path)});\n`,
                resolveDir: SDK,
                loader: 'js'
            }));
        }
    };
}

function entrySource(job) {
    const lines = [`import { bundle } from ${JSON.stringify(join(SDK, 'src/index.ts'))};`];
    const table = [];
    job.scripts.forEach((s, i) => {
        // Each script's module loads with its own test-harness globals
        // (harness.ts vitestScope): ES modules run in import order.
        lines.push(`import ${JSON.stringify(`sluice-scope:${s.name}`)};`);
        lines.push(`import * as s${i} from ${JSON.stringify(s.file)};`);
        table.push(`${JSON.stringify(s.name)}: s${i}`);
    });
    // Test files written by hand (`sluice test` only): each records its
    // describe/it calls under its key as its module loads.
    for (const t of job.tests ?? []) {
        lines.push(`import ${JSON.stringify(`sluice-test:${t.key}`)};`);
        lines.push(`import ${JSON.stringify(t.file)};`);
    }
    lines.push(`export const { fetchData, onWebhookPayloadReceived, runAction, onEvent, runTest } = bundle({ ${table.join(', ')} });`);
    return lines.join('\n') + '\n';
}

function messages(errors, root) {
    return errors.map((e) => ({
        file: e.location?.file ? relative(root, resolve(root, e.location.file)) : undefined,
        line: e.location?.line,
        message: e.text
    }));
}

/** The base64 VLQ numbers of one source-map segment. */
function vlq(text) {
    const out = [];
    let value = 0;
    let shift = 0;
    for (const ch of text) {
        const digit = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.indexOf(ch);
        if (digit < 0) return out;
        value += (digit & 31) * 2 ** shift;
        if (digit & 32) {
            shift += 5;
            continue;
        }
        out.push(value % 2 === 1 ? -Math.floor(value / 2) : Math.floor(value / 2));
        value = 0;
        shift = 0;
    }
    return out;
}

/**
 * Where each bundle line of the project's own files came from:
 * `{files, ranges: [[first bundle line, file index, [[bundle column,
 * line, column, …], …]], …]}` (for each bundle line, its segments as
 * triples: 0-based columns, 1-based lines), or null when none is the
 * project's.
 */
function sourceLines(map, dir, root) {
    const files = [];
    const index = new Map();
    const own = (map.sources ?? []).map((s) => {
        const abs = resolve(dir, s);
        // The SDK, packages and the compiler's own virtual modules are not the project's.
        if (abs.includes(`${sep}node_modules${sep}`) || !inside(root, abs) || !existsSync(abs)) return -1;
        const rel = relative(root, abs).split(sep).join('/');
        if (!index.has(rel)) {
            index.set(rel, files.length);
            files.push(rel);
        }
        return index.get(rel);
    });
    const ranges = [];
    let current = null;
    let source = 0;
    let line = 0;
    let column = 0;
    const generated = (map.mappings ?? '').split(';');
    for (let g = 0; g < generated.length; g++) {
        let file = -1;
        const segments = [];
        let genColumn = 0;
        for (const seg of generated[g].split(',')) {
            if (!seg) continue;
            const f = vlq(seg);
            genColumn += f[0] ?? 0;
            if (f.length >= 4) {
                source += f[1];
                line += f[2];
                column += f[3];
                if (segments.length === 0) file = own[source] ?? -1;
                // A line of the project's file (a bundle line holds one file).
                if ((own[source] ?? -1) === file) segments.push(genColumn, line + 1, column);
            }
        }
        if (segments.length === 0 || file < 0) {
            current = null;
            continue;
        }
        if (!current || current.file !== file || current.start + current.lines.length !== g + 1) {
            current = { start: g + 1, file, lines: [] };
            ranges.push(current);
        }
        current.lines.push(segments);
    }
    if (ranges.length === 0) return null;
    return { files, ranges: ranges.map((r) => [r.start, r.file, r.lines]) };
}

/**
 * Writes `path` whole: a new file beside it (`wx`: never through a link or
 * file already at that name), renamed over it, which replaces whatever is
 * at the name (a cloned project's `.sluice/build/x.js -> /elsewhere`)
 * rather than writing through it.
 */
async function replaceFile(path, data) {
    const tmp = `${path}.tmp${process.pid}`;
    await rm(tmp, { force: true });
    try {
        await writeFile(tmp, data, { flag: 'wx' });
        await rename(tmp, path);
    } catch (e) {
        await rm(tmp, { force: true });
        throw e;
    }
}

async function bundleScripts(job) {
    const esbuild = await import('esbuild');
    const root = resolve(job.root);
    // Absolute: esbuild places a relative outfile under its working
    // directory (the root), and the map's sources are relative to it; a
    // project named by a relative `--dir` then lost its source lines (and,
    // its bundle text differing, was componentized again).
    const bundle = resolve(job.bundle);
    await mkdir(dirname(bundle), { recursive: true });
    // A test file written by hand that does not bundle (a package it
    // imports, a syntax error) is left out and said, never the scripts'.
    let tests = job.tests ?? [];
    const skipped = [];
    for (;;) {
        const done = await bundleOnce(esbuild, root, bundle, { ...job, tests });
        if (done.ok || tests.length === 0) return { ...done, skipped };
        const bad = new Set();
        for (const e of done.errors) {
            const file = e.file ? resolve(root, e.file) : undefined;
            for (const t of tests) if (file === resolve(t.file)) bad.add(t.key);
        }
        const drop = bad.size > 0 ? tests.filter((t) => bad.has(t.key)) : tests;
        for (const t of drop) {
            const own = done.errors.filter((e) => !bad.size || (e.file && resolve(root, e.file) === resolve(t.file)));
            skipped.push({ key: t.key, message: own.map((e) => (e.file ? `${e.file}:${e.line ?? '?'}: ${e.message}` : e.message)).join('; ') });
        }
        tests = tests.filter((t) => !drop.includes(t));
    }
}

async function bundleOnce(esbuild, root, bundle, job) {
    try {
        const result = await esbuild.build({
            stdin: { contents: entrySource(job), resolveDir: root, sourcefile: ENTRY, loader: 'js' },
            // Paths in the bundle are relative to the project, so a moved
            // copy of a project bundles to the same text.
            absWorkingDir: root,
            bundle: true,
            write: false,
            format: 'esm',
            platform: 'neutral',
            target: 'es2022',
            // The engine has the `v` flag: its literals stay literals, so
            // that `rewritePropertyEscapes` sees those with `\p{…}`.
            supported: { 'regexp-set-notation': true },
            mainFields: ['module', 'main'],
            conditions: ['import', 'default'],
            preserveSymlinks: true,
            nodePaths: [join(SDK, 'node_modules')],
            inject: [join(SDK, 'src/node/globals.ts')],
            tsconfigRaw: { compilerOptions: { target: 'es2022', useDefineForClassFields: true } },
            legalComments: 'none',
            charset: 'utf8',
            logLevel: 'silent',
            // Read below (not written): which bundle lines are the
            // project's, for the SDK to name them in stacks.
            outfile: bundle,
            sourcemap: 'external',
            sourcesContent: false,
            plugins: [importPolicy(root, job.zero === true, job.tests)]
        });
        const js = result.outputFiles.find((f) => !f.path.endsWith('.map'));
        const map = result.outputFiles.find((f) => f.path.endsWith('.map'));
        // The project's own lines, for the SDK to name them in a stack
        // (appended: the lines before, and so the map, are unchanged).
        const table = map ? sourceLines(JSON.parse(map.text), dirname(bundle), root) : null;
        const rewritten = await rewritePropertyEscapes(js.text, table);
        if (rewritten.errors.length > 0) return { ok: false, errors: rewritten.errors };
        let text = rewritten.text;
        if (table) {
            // Frames of this file only (the engine's own files have lines too).
            table.bundle = basename(bundle);
            text += `globalThis.__sluiceSourceLines = ${JSON.stringify(table)};\n`;
        }
        const warnings = messages(result.warnings, root);
        // nango.yaml scripts: the original CLI's checks on their sources,
        // once they bundle (a syntax error is named by the bundler).
        if (job.zero !== true) {
            const { lintYamlScript } = await import('./zero.mjs');
            const errors = [];
            for (const s of job.scripts) {
                if (!s.kind) continue;
                const found = await lintYamlScript(resolve(root, s.file), root, s.kind, job.models ?? []);
                errors.push(...found.errors);
                warnings.push(...found.warnings);
            }
            if (errors.length > 0) return { ok: false, errors, warnings };
        }
        await replaceFile(bundle, text);
        return { ok: true, warnings };
    } catch (e) {
        if (e && Array.isArray(e.errors)) return { ok: false, errors: messages(e.errors, root) };
        throw e;
    }
}

/**
 * Unicode property escapes (`\p{L}`, `\P{Script=Greek}`) spelled out as
 * the code point ranges they stand for. The engine is built without ICU:
 * it knows no Unicode property, refuses a regular expression literal with
 * one when it parses the bundle (which failed every script of the
 * integration) and one made at run time when it is made. The ranges are
 * read from Node's own regular expressions (the Unicode data and case
 * folding of the Node that compiles), for each escape as its flags make
 * it (`i` closes a set under case folding, which the engine does only for
 * some characters; `v` complements after folding):
 * - literals are rewritten in the bundle, each within its line (the
 *   source map's lines stay right); a literal Node refuses is a compile
 *   error at the project's line, with Node's message;
 * - patterns made at run time (`new RegExp('\\p{L}+', 'u')`, zod's
 *   `emoji()`) get a stand-in `RegExp` that rewrites them, with a table
 *   of the properties the bundle's text names (`\p{…}` in its strings) on
 *   the bundle's first line (esbuild's helpers, none of the project's).
 */
async function rewritePropertyEscapes(text, table) {
    const errors = [];
    if (!/\\[pP]\{/.test(text)) return { text, errors };
    const sets = new PropertySets();
    const { parseSync } = await import('oxc-parser');
    const parsed = parseSync(ENTRY, text, { sourceType: 'module' });
    const literals = [];
    const walk = (node) => {
        if (Array.isArray(node)) {
            for (const n of node) walk(n);
        } else if (node && typeof node === 'object') {
            if (node.type === 'Literal' && node.regex) literals.push(node);
            for (const key in node) if (key !== 'regex') walk(node[key]);
        }
    };
    walk(parsed.program);
    let out = '';
    let at = 0;
    for (const lit of literals.sort((a, b) => a.start - b.start)) {
        const { pattern, flags } = lit.regex;
        if (!/[uv]/.test(flags) || !/\\[pP]\{/.test(pattern)) continue;
        let refused;
        try {
            new RegExp(pattern, flags);
        } catch (e) {
            refused = String(e && e.message ? e.message : e);
        }
        let rewritten;
        if (refused === undefined) {
            // The engine does not fold case in a `v` class's set
            // operations: with `i`, such a class is the set Node gives it.
            const source = flags.includes('v') && flags.includes('i') ? foldClasses(pattern, flags) : pattern;
            rewritten = rewriteProperties(source, flags, (name, negated, f) => sets.lookup(name, negated, f));
            if (/\\[pP]\{/.test(rewritten.replace(/\\\\/g, ''))) {
                refused = `Invalid regular expression: /${pattern}/${flags}: properties of strings (\\p{RGI_Emoji}…) are not available in sluice`;
            }
        }
        if (refused !== undefined) {
            errors.push({ ...bundlePosition(text, lit.start, table), message: refused });
            continue;
        }
        out += text.slice(at, lit.start) + `/${rewritten}/${flags}`;
        at = lit.end;
    }
    text = out + text.slice(at);
    // Names left in the text are in strings: patterns made at run time.
    const names = new Set();
    for (const m of text.matchAll(/\\[pP]\{([A-Za-z0-9_=]+)\}/g)) names.add(m[1]);
    const runtime = {};
    for (const name of names) {
        const entry = sets.entry(name);
        if (entry) runtime[name] = entry;
    }
    if (Object.keys(runtime).length > 0) {
        // One line (minified), so that the bundle's lines stay where the
        // source map has them.
        const esbuild = await import('esbuild');
        const install = `(${installPropertyEscapes})(${JSON.stringify(runtime)}, ${rewriteProperties});`;
        let line = (await esbuild.transform(install, { minify: true, target: 'es2022', charset: 'utf8' })).code.trim();
        if (!line.endsWith(';')) line += ';';
        if (line.includes('\n')) throw new Error('the Unicode property table does not fit on one line');
        text = line + text;
    }
    return { text, errors };
}

/**
 * A `v` pattern with each top-level class that names a property or holds
 * a set operation (`--`, `&&`) replaced by the code points Node's
 * regular expression matches with it and these flags (its case folding
 * included); a class with strings (`\q{…}`) is left as it is.
 */
function foldClasses(source, flags) {
    const set = flags.replace(/[^iv]/g, '');
    let out = '';
    let start = -1;
    let depth = 0;
    for (let i = 0; i < source.length; i++) {
        const c = source[i];
        if (c === '\\') {
            if (depth === 0) out += source.slice(i, i + 2);
            i++;
            continue;
        }
        if (c === '[') {
            if (depth === 0) start = i;
            depth++;
        } else if (c === ']' && depth > 0) {
            depth--;
            if (depth === 0) {
                const cls = source.slice(start, i + 1);
                const folds = /\\[pP]\{|--|&&/.test(cls.replace(/\\\\/g, '')) && !/\\q\{/.test(cls);
                out += folds ? `[${rangeText(scanSet(cls, set))}]` : cls;
            }
            continue;
        }
        if (depth === 0) out += c;
    }
    return depth === 0 ? out : source;
}

/** Code point ranges as class contents, escaped (valid with `u` and `v`). */
function rangeText(ranges) {
    const one = (cp) => `\\u{${cp.toString(16)}}`;
    return ranges.map(([from, to]) => (from === to ? one(from) : `${one(from)}-${one(to)}`)).join('');
}

/**
 * `source` with each `\p{name}`/`\P{name}` that `lookup(name, negated,
 * flags)` knows replaced by its ranges: a class of its own, but within a
 * class of a `u` pattern (which cannot nest), where they join the others.
 * Runs in Node and, for patterns made at run time, in the engine.
 */
function rewriteProperties(source, flags, lookup) {
    const nested = flags.includes('v');
    const escape = /[pP]\{([A-Za-z0-9_=]+)\}/y;
    let depth = 0;
    let out = '';
    for (let i = 0; i < source.length; i++) {
        const c = source[i];
        if (c === '\\') {
            escape.lastIndex = i + 1;
            const m = escape.exec(source);
            const set = m ? lookup(m[1], source[i + 1] === 'P', flags) : undefined;
            if (set !== undefined) {
                out += depth === 0 || nested ? `[${set}]` : set;
                i += m[0].length;
            } else {
                out += source.slice(i, i + 2);
                i++;
            }
            continue;
        }
        if (c === '[' && (depth === 0 || nested)) depth++;
        else if (c === ']' && depth > 0) depth--;
        out += c;
    }
    return out;
}

/**
 * The code point sets of Unicode properties as Node's regular expressions
 * have them, as class contents (`\u{41}-\u{5a}…`), each read once: `pu`
 * (`\p{X}` without `i`), `Pu` (its complement), `piu` (`\p{X}` with `i`:
 * closed under case folding, with `v` too), `Piu` (`\P{X}` with `i`, `u`
 * flag: the closure of the complement) and `Piv` (`\P{X}` with `i`, `v`
 * flag: the complement of the closure).
 */
class PropertySets {
    #done = new Map();

    /** What `rewriteProperties` puts for an escape; undefined for no property. */
    lookup(name, negated, flags) {
        const i = flags.includes('i');
        const kind = !i ? (negated ? 'Pu' : 'pu') : !negated ? 'piu' : flags.includes('v') ? 'Piv' : 'Piu';
        return this.get(name, kind);
    }

    /** The five sets of a property (0 for an `i` one equal to its `u` one), for the engine's table. */
    entry(name) {
        if (this.get(name, 'pu') === undefined) return undefined;
        const [pu, Pu, piu, Piu, Piv] = ['pu', 'Pu', 'piu', 'Piu', 'Piv'].map((k) => this.get(name, k));
        return [pu, Pu, piu === pu ? 0 : piu, Piu === Pu ? 0 : Piu, Piv === Pu ? 0 : Piv];
    }

    get(name, kind) {
        const key = `${kind}:${name}`;
        if (!this.#done.has(key)) this.#done.set(key, this.#read(name, kind));
        return this.#done.get(key);
    }

    #read(name, kind) {
        try {
            new RegExp(`\\p{${name}}`, 'u');
        } catch {
            return undefined; // not a property (or one of strings)
        }
        const ranges = {
            pu: () => scanSet(`\\p{${name}}`, 'u'),
            Pu: () => complement(scanSet(`\\p{${name}}`, 'u')),
            piu: () => scanSet(`\\p{${name}}`, 'iu'),
            Piu: () => scanSet(`\\P{${name}}`, 'iu'),
            Piv: () => complement(scanSet(`\\p{${name}}`, 'iu'))
        }[kind]();
        return rangeText(ranges);
    }
}

/**
 * Every code point as text, in four runs in which no two surrogates pair
 * up: [0, D7FF], the low surrogates, the high ones, [E000, 10FFFF].
 */
let everyCodePoint;
function codePointRuns() {
    if (everyCodePoint) return everyCodePoint;
    const run = (from, to) => {
        const units = [];
        for (let cp = from; cp <= to; cp++) {
            if (cp > 0xffff) units.push(0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
            else units.push(cp);
        }
        // By code units: a decoder would make each lone surrogate U+FFFD.
        let text = '';
        for (let at = 0; at < units.length; at += 8192) text += String.fromCharCode(...units.slice(at, at + 8192));
        return text;
    };
    everyCodePoint = [run(0, 0xd7ff), run(0xdc00, 0xdfff), run(0xd800, 0xdbff), run(0xe000, 0x10ffff)];
    return everyCodePoint;
}

/** The ranges of code points that `escape` (one code point's worth) matches with `flags`. */
function scanSet(escape, flags) {
    const re = new RegExp(`(?:${escape})+`, `${flags}g`);
    const found = [];
    for (const run of codePointRuns()) {
        for (const m of run.matchAll(re)) {
            const text = m[0];
            const first = text.codePointAt(0);
            const tail = text.charCodeAt(text.length - 1);
            const paired = text.length >= 2 && tail >= 0xdc00 && tail <= 0xdfff && text.charCodeAt(text.length - 2) >= 0xd800 && text.charCodeAt(text.length - 2) <= 0xdbff;
            found.push([first, paired ? text.codePointAt(text.length - 2) : tail]);
        }
    }
    found.sort((a, b) => a[0] - b[0]);
    const merged = [];
    for (const r of found) {
        const last = merged[merged.length - 1];
        if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
        else merged.push([r[0], r[1]]);
    }
    return merged;
}

/** The code points not in `ranges` (sorted, disjoint). */
function complement(ranges) {
    const out = [];
    let next = 0;
    for (const [from, to] of ranges) {
        if (from > next) out.push([next, from - 1]);
        next = to + 1;
    }
    if (next <= 0x10ffff) out.push([next, 0x10ffff]);
    return out;
}

/**
 * Runs in the script's engine (its text goes in the bundle): `RegExp`
 * becomes a constructor that rewrites the Unicode property escapes of a
 * `u`/`v` pattern with the table's sets (`[name]: [pu, Pu, piu, Piu,
 * Piv]`, see `PropertySets`) and builds the engine's own. Regular
 * expressions are still the engine's: the same prototype (`instanceof
 * RegExp` holds, subclasses work), and its statics (`RegExp.$1`) are read
 * through. A name the table lacks is left for the engine to refuse.
 */
function installPropertyEscapes(table, rewrite) {
    const Native = globalThis.RegExp;
    const any = /\\[pP]\{/;
    const lookup = (name, negated, flags) => {
        const sets = Object.prototype.hasOwnProperty.call(table, name) ? table[name] : undefined;
        if (!sets) return undefined;
        if (!flags.includes('i')) return negated ? sets[1] : sets[0];
        if (!negated) return sets[2] || sets[0];
        return flags.includes('v') ? sets[4] || sets[1] : sets[3] || sets[1];
    };
    const done = new Map();
    function RegExp(pattern, flags) {
        // An expression given new flags is made again from its source.
        if (pattern instanceof Native && typeof flags === 'string' && any.test(pattern.source)) pattern = pattern.source;
        if (typeof pattern === 'string' && typeof flags === 'string' && (flags.includes('u') || flags.includes('v')) && any.test(pattern)) {
            const key = `${flags}/${pattern}`;
            let rewritten = done.get(key);
            if (rewritten === undefined) {
                rewritten = rewrite(pattern, flags, lookup);
                if (done.size < 1024) done.set(key, rewritten);
            }
            pattern = rewritten;
        }
        if (new.target === undefined) return Native(pattern, flags);
        return Reflect.construct(Native, [pattern, flags], new.target === RegExp ? Native : new.target);
    }
    Object.defineProperty(RegExp, 'prototype', { value: Native.prototype, writable: false });
    Object.defineProperty(RegExp, 'name', { value: 'RegExp' });
    Object.defineProperty(RegExp, 'toString', { value: () => 'function RegExp() { [native code] }', configurable: true, writable: true });
    Object.setPrototypeOf(RegExp, Native);
    // `re.constructor === RegExp` holds; the species stays the engine's
    // own, so that `split` and `replace` keep their fast paths.
    Object.defineProperty(Native.prototype, 'constructor', { value: RegExp, writable: true, configurable: true, enumerable: false });
    Object.defineProperty(RegExp, Symbol.species, {
        get() {
            return this === RegExp ? Native : this;
        },
        configurable: true
    });
    for (const name of ['input', '$_', 'lastMatch', '$&', 'lastParen', '$+', 'leftContext', '$`', 'rightContext', "$'", '$1', '$2', '$3', '$4', '$5', '$6', '$7', '$8', '$9']) {
        if (Object.getOwnPropertyDescriptor(Native, name)) {
            const settable = name === 'input' || name === '$_';
            Object.defineProperty(RegExp, name, {
                get: () => Native[name],
                set: settable ? (value) => (Native[name] = value) : undefined,
                configurable: true
            });
        }
    }
    Object.defineProperty(globalThis, 'RegExp', { value: RegExp, writable: true, configurable: true, enumerable: false });
}

/** The project's file and line of a bundle offset, when it is the project's. */
function bundlePosition(text, offset, table) {
    if (!table) return {};
    const before = text.slice(0, offset);
    const line = before.split('\n').length;
    const column = offset - (before.lastIndexOf('\n') + 1);
    for (const [start, file, lines] of table.ranges) {
        const segments = lines[line - start];
        if (line < start || !segments) continue;
        let found = segments[1];
        for (let i = 0; i < segments.length; i += 3) if (segments[i] <= column) found = segments[i + 1];
        return { file: table.files[file], line: found };
    }
    return {};
}

async function componentizeBundle(job) {
    const { componentize } = await import('@bytecodealliance/componentize-js');
    const target = resolve(job.component);
    const wit = resolve(job.wit);
    await mkdir(dirname(target), { recursive: true });
    // The bundle by its file name alone (this process does one job): the
    // engine names frames by the path it was given, and a stack should not
    // carry where the deployer's build folder was.
    process.chdir(dirname(resolve(job.bundle)));
    try {
        const { component } = await componentize({
            sourcePath: basename(job.bundle),
            witPath: wit,
            worldName: 'bundle',
            disableFeatures: ['http', 'fetch-event']
        });
        await replaceFile(target, component);
        return { ok: true };
    } catch (e) {
        return { ok: false, errors: [{ message: String(e && e.message ? e.message : e) }] };
    }
}

/** Where the definitions' bundle would go (it is never written). */
const DEFINITIONS_OUT = '.sluice/definitions.cjs';

/**
 * An error thrown while a script's definition was read, at the line of the
 * project's file it came from (the bundle's code runs in a `Function`,
 * whose frames V8 names `<anonymous>:line:column`, two lines of wrapper
 * first); the first frames as they are when none is the project's.
 */
function loadFailure(e, table) {
    // The error itself (a ZodError's message spans lines), on one line.
    let what = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    what = what.replace(/\s+/g, ' ').trim();
    if (e && (e.code === 'ERR_ACCESS_DENIED' || e.code === 'ERR_DLOPEN_DISABLED')) {
        const which = [e.permission, e.resource].filter((x) => typeof x === 'string').join(' ');
        what += `${which ? ` (${which})` : ''} — a script's top-level code runs when sluice reads its definition, with no file writes, child processes, workers or native addons, and reads of the SDK and zod only`;
    }
    const first = what.length > 2000 ? `${what.slice(0, 2000)}…` : what;
    // Frames of the bundle only (`definition` runs it in a `Function`);
    // other code compiled from strings has `<anonymous>` frames too.
    const frames = e && e.stack ? String(e.stack).matchAll(/eval at definition \(.*?\), <anonymous>:(\d+):(\d+)/g) : [];
    for (const [, l, c] of frames) {
        const at = table && mapPosition(table, Number(l) - 2, Number(c) - 1);
        if (at) return `loading the script failed at ${at}: ${first}`;
    }
    return `loading the script failed: ${e && e.stack ? String(e.stack).split('\n').slice(0, 3).map((l) => l.trim()).join(' ') : e}`;
}

/** A bundle position (1-based line, 0-based column) as `file:line:column`, from a `sourceLines` table. */
function mapPosition(table, line, column) {
    let lo = 0;
    let hi = table.ranges.length;
    while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (table.ranges[mid][0] <= line) lo = mid + 1;
        else hi = mid;
    }
    const range = table.ranges[lo - 1];
    const segments = range && range[2][line - range[0]];
    if (!range || !segments) return null;
    let at = 0;
    for (let i = 0; i + 2 < segments.length && segments[i] <= column; i += 3) at = i;
    return `${table.files[range[1]]}:${segments[at + 1]}:${segments[at + 2] + 1}`;
}

/** The `nango` module while definitions are read in Node: the helpers only. */
const DEFINITION_NANGO = `
export const createSync = (d) => ({ ...d, type: 'sync' });
export const createAction = (d) => ({ ...d, type: 'action' });
export const createOnEvent = (d) => ({ ...d, type: 'onEvent' });
export const createFunction = (d) => ({ ...d, type: 'function' });
export class ActionError extends Error { constructor(payload) { super(payload && payload.message); this.payload = payload; } }
`;

/**
 * A zero-yaml integration's definitions, first half: the source checks on
 * each entry and the local files it imports, and each entry bundled for
 * Node (§4). Nothing of the project runs here; what does (each bundle's
 * top-level code, to read its default export) is the `load` step's, which
 * sluice runs next in a Node.js with no file writes, no child processes
 * and reads of the SDK and zod only (`then`, toolchain.rs).
 */
async function definitions(job) {
    const esbuild = await import('esbuild');
    const zero = await import('./zero.mjs');
    const root = resolve(job.root);
    const zodPath = await zero.zodModule(root);
    const errors = [];
    const warnings = [];
    const checked = new Set();
    // Every project file the definitions were read from (for the caller's cache).
    const inputs = new Set();
    const load = [];
    for (const entry of job.entries) {
        let result;
        try {
            result = await esbuild.build({
                entryPoints: [entry.file],
                absWorkingDir: root,
                bundle: true,
                write: false,
                metafile: true,
                format: 'cjs',
                platform: 'node',
                target: 'es2022',
                preserveSymlinks: true,
                logLevel: 'silent',
                // Not written: the map names the line of an error thrown
                // while the definition is read.
                outfile: join(root, DEFINITIONS_OUT),
                sourcemap: 'external',
                sourcesContent: false,
                plugins: [
                    {
                        name: 'sluice-definitions',
                        setup(build) {
                            build.onResolve({ filter: /.*/ }, (args) => {
                                if (args.kind === 'entry-point') return undefined;
                                if (args.path === 'nango' || args.path === 'nango/experimental') return { path: 'nango', namespace: 'sluice-nango' };
                                if (args.path.startsWith('.') || isAbsolute(args.path)) {
                                    const target = resolve(args.resolveDir, args.path);
                                    if (!inside(root, target)) {
                                        return { errors: [{ text: `All imported files must live within the project: "${args.path}" in "${relative(root, args.importer)}" points outside it` }] };
                                    }
                                    return undefined;
                                }
                                const pkg = packageName(args.path);
                                if (pkg === 'zod' || pkg === 'crypto' || pkg === 'node:crypto' || pkg === 'url' || pkg === 'node:url') return { path: args.path, external: true };
                                if (UNSUPPORTED.has(pkg)) return { path: pkg, namespace: 'sluice-unsupported' };
                                return { errors: [{ text: `Import of package '${pkg}' is not allowed. Allowed packages are: ${ZERO_ALLOWED.join(', ')} (in "${relative(root, args.importer)}")` }] };
                            });
                            build.onLoad({ filter: /.*/, namespace: 'sluice-nango' }, () => ({ contents: DEFINITION_NANGO, loader: 'js' }));
                            build.onLoad({ filter: /.*/, namespace: 'sluice-unsupported' }, (args) => ({ contents: unsupportedModule(args.path), loader: 'js' }));
                        }
                    }
                ]
            });
        } catch (e) {
            if (e && Array.isArray(e.errors)) {
                errors.push(...messages(e.errors, root));
                continue;
            }
            throw e;
        }
        for (const input of Object.keys(result.metafile.inputs)) {
            if (input.includes(':') || input.includes('node_modules')) continue;
            const file = resolve(root, input);
            inputs.add(file);
            const isEntry = file === resolve(entry.file);
            // A JSON file the scripts import is data (esbuild's loader), not code to check.
            if (!isEntry && /\.json$/i.test(file)) continue;
            if (!isEntry && checked.has(file)) continue;
            checked.add(file);
            errors.push(...(await zero.checkSource(file, root, isEntry, ZERO_ALLOWED)));
        }
        const code = result.outputFiles.find((f) => !f.path.endsWith('.map')).text;
        const map = result.outputFiles.find((f) => f.path.endsWith('.map'));
        load.push({
            file: entry.file,
            where: relative(root, entry.file),
            name: entry.name,
            code,
            // The project's lines of the bundle, read here: the load step reads no project file.
            lines: map ? sourceLines(JSON.parse(map.text), dirname(join(root, DEFINITIONS_OUT)), root) : null,
            checkpoints: /\bnango\s*\.\s*(getCheckpoint|saveCheckpoint|clearCheckpoint)\s*\(/.test(await readFile(entry.file, 'utf8'))
        });
    }
    // The load step may read the zod folder: a link in it that leads out
    // of it (a cloned project's `node_modules/zod/x -> /`) would let the
    // scripts' top-level code read anything through it.
    const zodReal = await realpath(zodPath).catch(() => zodPath);
    const leaving = await linkLeaving(zodReal);
    if (leaving) {
        errors.push({
            file: relative(root, zodPath) || zodPath,
            message: `${leaving.path} is a link to ${leaving.target}, outside the zod package: the scripts' top-level code, run while their definitions are read, may read zod's folder and would read there too (reinstall zod, or remove the link)`
        });
        return { ok: false, errors, warnings, inputs: [...inputs].sort() };
    }
    const then = {
        step: 'load',
        job: { integration: job.integration, zodPath, entries: load },
        // What the load step reads: the zod the scripts get, through its
        // link and at its real place (Node's loader follows links).
        read: [...new Set([zodPath, zodReal])]
    };
    return { ok: errors.length === 0, errors, warnings, inputs: [...inputs].sort(), then };
}

/** The first link under `dir` (a real path) whose target is not inside it, with where it leads; at most 100,000 entries looked at. */
async function linkLeaving(dir) {
    const stack = [dir];
    let looked = 0;
    while (stack.length > 0) {
        const at = stack.pop();
        let names;
        try {
            names = await readdir(at);
        } catch {
            continue;
        }
        for (const name of names) {
            if (++looked > 100_000) return { path: at, target: 'more files than a zod package has' };
            const path = join(at, name);
            const meta = await lstat(path).catch(() => null);
            if (!meta) continue;
            if (meta.isSymbolicLink()) {
                const real = await realpath(path).catch(() => null);
                if (real === null || !(real === dir || real.startsWith(dir + sep))) {
                    return { path, target: await readlink(path).catch(() => '?') };
                }
            } else if (meta.isDirectory()) {
                stack.push(path);
            }
        }
    }
    return null;
}

/**
 * A zero-yaml integration's definitions, second half: each entry's bundle
 * run to read its default export (§4.6–4.8), then the integration-wide
 * rules. The bundles are the project's code: sluice runs this step under
 * Node's permission model (toolchain.rs). Before each entry, a line on
 * standard error names it, for the message of a step that never ends.
 */
async function loadDefinitions(job) {
    const zero = await import('./zero.mjs');
    const errors = [];
    const warnings = [];
    const out = { providerConfigKey: job.integration, actions: [], syncs: [], onEventScripts: { 'post-connection-creation': [], 'pre-connection-deletion': [], 'validate-connection': [] } };
    // Each entry file's kind: a sync and an action may share a name.
    const kinds = {};
    for (const entry of job.entries) {
        process.stderr.write(`${LOADING}${entry.where}\n`);
        try {
            const d = zero.definition({ code: entry.code, file: entry.where, name: entry.name, integration: job.integration, zodPath: job.zodPath });
            for (const w of d.warnings) warnings.push({ file: entry.where, message: w });
            if (entry.checkpoints && d.definition) d.definition.features.push('checkpoints');
            kinds[entry.file] = d.kind;
            if (d.kind === 'sync') out.syncs.push(d.definition);
            else if (d.kind === 'action') out.actions.push(d.definition);
            else if (d.kind === 'onEvent') out.onEventScripts[d.event].push(entry.name);
        } catch (e) {
            errors.push({ file: entry.where, message: e && e.rule ? e.message : loadFailure(e, entry.lines) });
        }
    }
    // Integration-wide rules (§4.7 post-validation).
    const owner = new Map();
    for (const s of out.syncs) {
        for (const m of s.usedModels) {
            if (owner.has(m)) errors.push({ file: job.integration, message: `Model "${m}" is defined multiple times. Models must be unique per integration (syncs ${owner.get(m)} and ${s.name})` });
            else owner.set(m, s.name);
        }
    }
    const endpoints = new Map();
    const claim = (e, who) => {
        const key = `${e.method} ${e.path}`;
        if (endpoints.has(key)) errors.push({ file: job.integration, message: `Endpoint "${key}" is used multiple times (${endpoints.get(key)} and ${who}). Endpoints must be unique` });
        else endpoints.set(key, who);
    };
    for (const s of out.syncs) for (const e of s.endpoints) claim(e, s.name);
    for (const a of out.actions) if (a.endpoint) claim(a.endpoint, a.name);
    if (errors.length > 0) return { ok: false, errors, warnings };
    return { ok: true, definition: out, kinds, warnings };
}

/** How the load step names the entry it is about to run, on standard error (toolchain.rs reads it). */
const LOADING = 'sluice: reading the definition of ';

async function main() {
    const step = process.argv[2];
    const chunks = [];
    for await (const c of process.stdin) chunks.push(c);
    const job = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    let result;
    if (step === 'bundle') result = await bundleScripts(job);
    else if (step === 'componentize') result = await componentizeBundle(job);
    else if (step === 'definitions') result = await definitions(job);
    else if (step === 'load') result = await loadDefinitions(job);
    else if (step === 'migrate') result = await (await import('./migrate.mjs')).migrate(job);
    else throw new Error(`unknown step ${step}: expected bundle, componentize, definitions, load or migrate`);
    // The load step ends with its answer: a timer or a listener the
    // project's code left behind does not keep it going.
    if (step === 'load') process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
    else process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ ok: false, errors: [{ message: String(e && e.stack ? e.stack : e) }] }) + '\n');
    process.exitCode = 1;
});
