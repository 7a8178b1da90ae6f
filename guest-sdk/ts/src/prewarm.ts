// Work done once, while componentize-js pre-initializes the component
// (Wizer), instead of in every execution.
//
// SpiderMonkey creates standard classes, their prototypes and the shapes of
// new objects lazily, per global, on first use. A fresh instance starts from
// the snapshot Wizer took after the module's top level ran, so whatever the
// top level used is ready in every instance, and whatever it did not is
// created again in each one. componentize-js runs its binding code (lifting
// and lowering WIT values, the export wrappers) in a second global, which the
// script never touches at the top level: without this, every call paid for
// creating Promise, the typed arrays, DataView and String's prototype there.
//
// The binding global is reached through an imported function: its
// `constructor` is that global's `Function`. The code below only uses the
// language's builtins: no imports, no clock, no randomness, nothing a script
// can observe afterwards.

import { SdkFunction } from './codegen';
const WARM = `
const keep = [];
const g = globalThis;
for (const name of ['Object', 'Function', 'Array', 'Boolean', 'Number', 'String', 'Symbol', 'BigInt', 'Date',
    'RegExp', 'Error', 'EvalError', 'RangeError', 'ReferenceError', 'SyntaxError', 'TypeError', 'URIError',
    'AggregateError', 'Promise', 'Map', 'Set', 'WeakMap', 'WeakSet', 'WeakRef', 'FinalizationRegistry',
    'ArrayBuffer', 'DataView', 'Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array',
    'Int32Array', 'Uint32Array', 'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array', 'JSON',
    'Math', 'Reflect', 'Proxy', 'Iterator', 'TextEncoder', 'TextDecoder']) {
    const v = g[name];
    if (typeof v === 'function' && v.prototype) Object.getOwnPropertyNames(v.prototype);
}
keep.push('a'.charCodeAt(0), 'aB'.toUpperCase(), 'aB'.toLowerCase(), ' a '.trim(), 'a,b'.split(','), 'ab'.slice(1),
    'ab'.startsWith('a'), 'ab'.includes('b'), 'a'.padStart(2, '0'), 'a-a'.replace(/-/g, '_'), 'x'.repeat(2),
    (1).toString(), (1.5).toFixed(1), true.toString(), Symbol.iterator.toString(), (1n + 2n).toString(),
    Number.isInteger(1), Number.parseInt('1'), Number.parseFloat('1.5'), Math.max(1, 2), Math.floor(1.5),
    encodeURIComponent('a b'), decodeURIComponent('a%20b'), /a(b)?/.exec('ab'), /a/.test('a'), 'ab'.match(/b/));
const arr = Array.from({ length: 4 }, (_, i) => i);
keep.push(arr.map((x) => x + 1), arr.filter((x) => x > 1), arr.reduce((a, b) => a + b, 0), arr.find((x) => x > 2),
    arr.some((x) => x > 2), arr.every((x) => x >= 0), arr.includes(2), arr.indexOf(2), arr.join(','), arr.slice(1),
    [...arr], arr.concat([5]), [3, 1, 2].sort(), arr.flatMap((x) => [x]), Array.isArray(arr), Array.of(1),
    arr.entries().next(), arr.keys().next(), arr.values().next());
arr.forEach(() => {});
arr.push(5);
arr.splice(0, 1);
const o = { a: 1, b: 'x', c: [1], d: { e: null } };
const { a, ...rest } = o;
keep.push(a, rest, Object.keys(o), Object.values(o), Object.entries(o), Object.assign({}, o), { ...o },
    Object.fromEntries([['a', 1]]), Object.freeze({}), Object.getPrototypeOf(o), Object.create(null),
    Object.defineProperty({}, 'a', { value: 1 }), Object.getOwnPropertyDescriptor(o, 'a'), Reflect.ownKeys(o),
    JSON.parse(JSON.stringify(o)), JSON.stringify(o, null, 2), new Proxy({}, {}));
for (const k in o) keep.push(k);
const m = new Map([['a', 1]]);
const s = new Set([1]);
for (const [k, v] of m) keep.push(k, v);
for (const v of s) keep.push(v);
keep.push(m.get('a'), m.has('a'), s.has(1), [...m.keys()], [...s.values()], new WeakMap(), new WeakSet());
const d = new Date('2024-03-01T10:00:00Z');
keep.push(d.toISOString(), d.getTime(), d.valueOf(), Date.parse('2024-03-01T10:00:00Z'), Date.UTC(2024, 0, 1),
    new Date(0).toJSON(), d.getUTCFullYear());
const buf = new ArrayBuffer(16);
const dv = new DataView(buf);
dv.setInt8(0, 1);
dv.setUint32(4, 1, true);
dv.setFloat64(8, 1, true);
keep.push(dv.getInt8(0), dv.getUint32(4, true), dv.getFloat64(8, true), new Uint8Array(buf, 0, 4),
    new Uint8Array(4).subarray(1), new Uint8Array([1, 2]).slice(1), new Int32Array(1), new Float64Array(1));
if (typeof TextEncoder === 'function' && typeof TextDecoder === 'function') {
    const bytes = new Uint8Array(8);
    keep.push(new TextEncoder().encode('x'), new TextEncoder().encodeInto('x', bytes),
        new TextDecoder().decode(bytes.subarray(0, 1)));
}
try { throw new TypeError('warm'); } catch (e) { keep.push(e.message, e.name, String(e)); }
keep.push(new Error('warm', { cause: 1 }), new RangeError('warm'), { tag: 'ok', val: 1 }, { tag: 'err', val: 1 },
    { ptr: 1, len: 1, codepoints: 1 });
async function af(x) { await null; return x; }
function* gen() { yield 1; }
async function* agen() { yield 1; await null; }
keep.push(af(1).then((x) => x), [...gen()], agen().next(), Promise.resolve(1).then((x) => x).catch(() => 0).finally(() => {}),
    Promise.all([af(1)]), Promise.allSettled([af(1)]), Promise.race([af(1)]), Promise.any([af(1)]),
    new Promise((resolve) => resolve(1)), Promise.reject(new Error('warm')).catch(() => 0));
(async () => { for await (const x of agen()) keep.push(x); })();
return keep;
`;

/** The objects the warm-up made, kept so the shapes they created survive the snapshot's GC. */
let kept: unknown[] = [];

/** Warms this global and the one componentize-js runs its bindings in, through `imported`. */
export function prewarm(imported: unknown): void {
    kept = [];
    try {
        kept.push(new SdkFunction(WARM)());
    } catch {
        // A builtin this engine lacks: the warm-up is an optimisation only.
    }
    try {
        const F = (imported as { constructor?: unknown }).constructor;
        if (typeof F === 'function' && F !== Function) {
            const bindings = F as FunctionConstructor;
            kept.push(bindings(WARM)());
            // The bindings look up `globalThis.process?.env?.JCO_DEBUG` around
            // every call; an own property answers that without a resolve miss.
            bindings('if (!("process" in globalThis)) globalThis.process = undefined;')();
        }
    } catch {
        // As above.
    }
}
