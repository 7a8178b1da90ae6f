// The bench script run the way the original runner runs a script: the
// CommonJS bundle compiled into a fresh `node:vm` context per execution,
// with a `nango` object whose methods are plain async functions.
//
//   node benches/node-vm.mjs <script.ts> <guest-sdk/ts dir (for esbuild)> <runs>
//
// Prints one JSON line: { "median_us": …, "p90_us": …, "runs": … }.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import vm from 'node:vm';

const [script, sdkDir, runsArg] = process.argv.slice(2);
const require = createRequire(join(sdkDir, 'package.json'));
const esbuild = require('esbuild');
const runs = Number(runsArg || 300);

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

for (let i = 0; i < 30; i++) await once();
const times = [];
for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    const out = await once();
    times.push(Number(process.hrtime.bigint() - start) / 1000);
    if (out.count !== 150) throw new Error(`unexpected output ${JSON.stringify(out)}`);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ median_us: times[Math.floor(runs / 2)], p90_us: times[Math.floor(runs * 0.9)], runs }));
