#!/usr/bin/env node
// Turns an integration's TypeScript scripts into one WebAssembly component.
// sluice runs this; it is not meant to be called by hand.
//
//   compile.mjs bundle        < job.json   bundles the scripts with esbuild
//   compile.mjs componentize  < job.json   bundle.js -> component (componentize-js)
//
// job.json:
//   { "root": "/project",                 // the nango-integrations folder
//     "scripts": [{ "name": "contacts", "file": "/project/hubspot/syncs/contacts.ts" }],
//     "bundle": "/project/.sluice/build/hubspot.js",
//     "component": "/project/.sluice/build/hubspot.wasm",
//     "wit": "/tmp/…/wit" }
//
// Both print one JSON line: { "ok": true } or { "ok": false, "errors": [{ "file", "line", "message" }] }.

import { writeFile, mkdir, rename, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

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

function packageName(spec) {
    const parts = spec.split('/');
    return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

function inside(root, file) {
    const rel = relative(root, file);
    return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/** Enforces the original's import rules on the project's own files. */
function importPolicy(root) {
    const sdkDir = SDK + sep;
    const entry = join(root, ENTRY);
    return {
        name: 'sluice-imports',
        setup(build) {
            build.onResolve({ filter: /.*/ }, async (args) => {
                if (args.kind === 'entry-point' || args.pluginData === 'sluice') return undefined;
                if (args.path.startsWith('nango:')) return { path: args.path, external: true };
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
                if (UNSUPPORTED.has(pkg)) {
                    return {
                        errors: [
                            {
                                text: `The import "${args.path}" in "${where}" is allowed by Nango but not by sluice: "${pkg}" needs Node's network and filesystem, which scripts do not have (use nango.proxy for HTTP)`
                            }
                        ]
                    };
                }
                return { errors: [{ text: `Importing libraries is not allowed. Please remove the import "${args.path}" from "${where}"` }] };
            });
        }
    };
}

function entrySource(job) {
    const lines = [`import { bundle } from ${JSON.stringify(join(SDK, 'src/index.ts'))};`];
    const table = [];
    job.scripts.forEach((s, i) => {
        lines.push(`import * as s${i} from ${JSON.stringify(s.file)};`);
        table.push(`${JSON.stringify(s.name)}: s${i}`);
    });
    lines.push(`export const { fetchData, onWebhookPayloadReceived, runAction, onEvent } = bundle({ ${table.join(', ')} });`);
    return lines.join('\n') + '\n';
}

function messages(errors, root) {
    return errors.map((e) => ({
        file: e.location?.file ? relative(root, resolve(e.location.file)) : undefined,
        line: e.location?.line,
        message: e.text
    }));
}

async function bundleScripts(job) {
    const esbuild = await import('esbuild');
    const root = resolve(job.root);
    await mkdir(dirname(job.bundle), { recursive: true });
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
            mainFields: ['module', 'main'],
            conditions: ['import', 'default'],
            preserveSymlinks: true,
            nodePaths: [join(SDK, 'node_modules')],
            inject: [join(SDK, 'src/node/globals.ts')],
            tsconfigRaw: { compilerOptions: { target: 'es2022', useDefineForClassFields: true } },
            legalComments: 'none',
            charset: 'utf8',
            logLevel: 'silent',
            plugins: [importPolicy(root)]
        });
        await writeFile(job.bundle, result.outputFiles[0].text);
        return { ok: true, warnings: messages(result.warnings, root) };
    } catch (e) {
        if (e && Array.isArray(e.errors)) return { ok: false, errors: messages(e.errors, root) };
        throw e;
    }
}

async function componentizeBundle(job) {
    const { componentize } = await import('@bytecodealliance/componentize-js');
    await mkdir(dirname(job.component), { recursive: true });
    try {
        const { component } = await componentize({
            sourcePath: job.bundle,
            witPath: job.wit,
            worldName: 'bundle',
            disableFeatures: ['http', 'fetch-event']
        });
        const tmp = `${job.component}.tmp${process.pid}`;
        await writeFile(tmp, component);
        await rename(tmp, job.component);
        return { ok: true };
    } catch (e) {
        await rm(`${job.component}.tmp${process.pid}`, { force: true });
        return { ok: false, errors: [{ message: String(e && e.message ? e.message : e) }] };
    }
}

async function main() {
    const step = process.argv[2];
    const chunks = [];
    for await (const c of process.stdin) chunks.push(c);
    const job = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    let result;
    if (step === 'bundle') result = await bundleScripts(job);
    else if (step === 'componentize') result = await componentizeBundle(job);
    else throw new Error(`unknown step ${step}: expected bundle or componentize`);
    process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ ok: false, errors: [{ message: String(e && e.stack ? e.stack : e) }] }) + '\n');
    process.exitCode = 1;
});
