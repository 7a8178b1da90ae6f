// The bench script run the way the original runner runs a script: the
// CommonJS bundle compiled into a fresh `node:vm` context per execution,
// with a `nango` object whose methods are plain async functions.
//
//   node benches/node-vm.mjs <script.ts> <guest-sdk/ts dir (for esbuild)> <expected output, JSON>
//
// Prints `ready` once the bundle is built, then for every line read on
// standard input runs the script once and prints how long that took, in
// microseconds, so the caller can interleave these runs with its own.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import vm from 'node:vm';

const [script, sdkDir, expected] = process.argv.slice(2);
const require = createRequire(join(sdkDir, 'package.json'));
const esbuild = require('esbuild');

const { outputFiles } = await esbuild.build({ entryPoints: [script], bundle: true, write: false, format: 'cjs', platform: 'node', target: 'es2022' });
const code = outputFiles[0].text;
const wrapped = `(function() { const module = { exports: {} }; const exports = module.exports; ${code}\nreturn module.exports; })()`;

const nango = {
    getMetadata: async () => ({ team: 'sales' }),
    log: async () => {}
};

async function once() {
    const compiled = new vm.Script(wrapped, { filename: 'pages-bench.js' });
    const context = vm.createContext({ console, Buffer, setTimeout, URL, URLSearchParams, Error });
    const exported = compiled.runInContext(context);
    return exported.default(nango);
}

console.log('ready');
for await (const _line of createInterface({ input: process.stdin })) {
    const start = process.hrtime.bigint();
    const out = await once();
    const us = Number(process.hrtime.bigint() - start) / 1000;
    if (JSON.stringify(out) !== expected) throw new Error(`unexpected output ${JSON.stringify(out)}`);
    console.log(us);
}
