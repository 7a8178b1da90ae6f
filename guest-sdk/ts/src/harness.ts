// `sluice test` for zero-yaml projects: the original's vitest harness
// (`nango/test`'s NangoActionMock / NangoSyncMock and the generated test
// shapes), run inside the component so that everything it computes in
// JavaScript — request identities (`String()`, `JSON.stringify`, WHATWG
// URLs), vitest's equalities — is computed by JavaScript. The host reads
// the fixture and the provider's pagination defaults, classifies the test
// file, and passes them in a `TestSpec`; nothing here touches the network
// or the store. ../../shared/nango-zero.md §6–§7 describes the behaviour.

import { Buffer } from 'buffer';
import { sha1 } from '@noble/hashes/legacy.js';
import { ActionError } from './index';
import { isMockFunction, runFile, vi } from './vitest';
import { setTestFiles } from './node/test-fs';

// ------ Built-ins the checks use, as they were before any script loaded

// The bundle evaluates this module before the scripts' modules (the entry
// imports index.ts, which imports this, first): a script that replaces
// `Object.is`, `JSON.stringify`, `Array.prototype[Symbol.iterator]` or a
// WeakMap method, at load or while it runs, changes neither what the
// generated-shape checks compare nor how they find a mock's fixture.
const apply = Reflect.apply;
const objectIs = Object.is;
const objectKeys = Object.keys;
const defineProperty = Object.defineProperty;
const hasOwnProperty = Object.prototype.hasOwnProperty;
const objectToString = Object.prototype.toString;
const isArray = Array.isArray;
const jsonStringify = JSON.stringify;
const jsonParse = JSON.parse;
const dateGetTime = Date.prototype.getTime;
const DateClass = Date;
const RegExpClass = RegExp;
const ProxyClass = Proxy;
const weakGet = WeakMap.prototype.get;
const weakSet = WeakMap.prototype.set;
const reflectGet = Reflect.get;
const reflectSet = Reflect.set;
const reflectDefine = Reflect.defineProperty;
const reflectDelete = Reflect.deleteProperty;
const reflectOwn = Reflect.getOwnPropertyDescriptor;
const objectCreate = Object.create;
const setPrototypeOf = Object.setPrototypeOf;
const getOwnPropertyNames = Object.getOwnPropertyNames;
const objectFreeze = Object.freeze;
const PromiseClass = Promise;
const textDecode = TextDecoder.prototype.decode;
const UTF8_SPEC = new TextDecoder();
const stringSlice = String.prototype.slice;
const stringEndsWith = String.prototype.endsWith;
const promiseThen = Promise.prototype.then;
const textEncode = TextEncoder.prototype.encode;
const UTF8_RESULTS = new TextEncoder();

function hasOwn(o: object, k: PropertyKey): boolean {
    return apply(hasOwnProperty, o, [k]);
}
function mapGet<K extends object, V>(m: WeakMap<K, V>, k: K): V | undefined {
    return apply(weakGet, m, [k]) as V | undefined;
}
/** `o[k]` when `o` has it as its own, never from its prototypes (a getter a script put there). */
function own(o: unknown, k: PropertyKey): any {
    return isObject(o) && hasOwn(o, k) ? (o as any)[k] : undefined;
}

/** A JSON object's own members in an object with no prototype (shallow). */
function bare(v: unknown): any {
    if (!isObject(v) || isArray(v)) return v;
    const out = objectCreate(null);
    const keys = objectKeys(v);
    for (let i = 0; i < keys.length; i++) defineProperty(out, keys[i]!, { value: (v as any)[keys[i]!], writable: true, enumerable: true, configurable: true });
    return out;
}

/** A JSON value whose objects and arrays have no prototype (deep): reading
 * it, serialising it or a member it lacks runs no getter a script put on
 * `Object.prototype` or `Array.prototype`. */
function sealed(v: unknown): any {
    if (!isObject(v)) return v;
    if (isArray(v)) {
        const out: unknown[] = [];
        for (let i = 0; i < v.length; i++) append(out, sealed(v[i]));
        setPrototypeOf(out, null);
        return out;
    }
    const out = objectCreate(null);
    const keys = objectKeys(v);
    for (let i = 0; i < keys.length; i++) defineProperty(out, keys[i]!, { value: sealed((v as any)[keys[i]!]), writable: true, enumerable: true, configurable: true });
    return out;
}

/** `{ [key]: value }` with no prototype: resolving a promise with it looks up no `then` a script planted. */
function holder(key: string, value: unknown): any {
    const out = objectCreate(null);
    defineProperty(out, key, { value, writable: true, enumerable: true, configurable: true });
    return out;
}

/** A resolved promise made with the built-in `Promise` (not the script's `Promise.resolve`). */
function resolved<T>(value: T): Promise<T> {
    return new PromiseClass<T>((resolve) => resolve(value));
}

/**
 * The host's spec, its containers without prototypes (the spec, its
 * fixture, the fixture's `nango` and records maps, the legacy files), read
 * by own members only: a getter a script put on `Object.prototype` (`then`,
 * `fixture`, `pagination`, a model's name) is never run with them. In a
 * generated-shape test the expected values (output, records) have no
 * prototypes at any depth either; what a script is given (input,
 * connection, responses) keeps its own. A test written by hand reads its
 * expected values itself: only the containers there.
 */
function prepareSpec(raw: unknown): TestSpec {
    const spec = bare(raw);
    const deep = own(spec, 'kind') !== 'file';
    const fixtureOf = (f: unknown): unknown => {
        if (!isObject(f) || isArray(f)) return f;
        const out = bare(f);
        if (deep && hasOwn(out, 'output')) out.output = sealed(out.output);
        const nango = own(out, 'nango');
        if (isObject(nango) && !isArray(nango)) {
            const n = bare(nango);
            for (const which of ['batchSave', 'batchDelete']) {
                const byModel = own(n, which);
                if (!isObject(byModel) || isArray(byModel)) continue;
                const m = bare(byModel);
                if (deep) {
                    const models = objectKeys(m);
                    for (let i = 0; i < models.length; i++) m[models[i]!] = sealed(m[models[i]!]);
                }
                n[which] = m;
            }
            out.nango = n;
        }
        return out;
    };
    if (hasOwn(spec, 'fixture')) spec.fixture = fixtureOf(spec.fixture);
    const fixtures = own(spec, 'fixtures');
    if (isObject(fixtures) && !isArray(fixtures)) {
        const out = bare(fixtures);
        const names = objectKeys(out);
        for (let i = 0; i < names.length; i++) out[names[i]!] = fixtureOf(out[names[i]!]);
        spec.fixtures = out;
    }
    const legacy = own(spec, 'legacy');
    if (isObject(legacy) && !isArray(legacy)) {
        const out = bare(legacy);
        if (deep) {
            const paths = objectKeys(out);
            for (let i = 0; i < paths.length; i++) {
                const p = paths[i]!;
                const expected = apply(stringEndsWith, p, ['/output.json']) || apply(stringEndsWith, p, ['/batchSave.json']) || apply(stringEndsWith, p, ['/batchDelete.json']);
                if (expected) out[p] = sealed(out[p]);
            }
        }
        spec.legacy = out;
    }
    return spec as TestSpec;
}

/** `list.push(value)` that no `Array.prototype` change reaches. */
function append<T>(list: T[], value: T): void {
    defineProperty(list, list.length, { value, writable: true, enumerable: true, configurable: true });
}

/** What the host asks for: one test file of a generated shape. */
export interface TestSpec {
    /** `action`: one `it` comparing the output; `sync`: the checks below;
     * `file`: a test file written by hand, bundled into the component,
     * run with the vitest of ./vitest.ts. */
    kind: 'action' | 'sync' | 'file';
    /** The bundled test file's key (`file` only). */
    file?: string;
    /** The files its `fs` reads (its recording), by absolute path (`file` only). */
    files?: Record<string, string>;
    /** The recordings of the mocks' names, when the test file has none of
     * its own (`file` only): a mock answers from its `name`'s. */
    fixtures?: Record<string, unknown>;
    /** The second `it` of a sync test: `delete` (fresh mock, JSON equality when the
     * fixture expects deletes), `delete-some` (some single call equal),
     * `track` (trackDeletesStart/End called), `no-delete` (batchDelete never
     * called), `none` (no second `it`). */
    second?: 'delete' | 'delete-some' | 'track' | 'track-ordered' | 'no-delete' | 'none';
    /** One mock for both `it`s (older template) instead of a fresh one each. */
    sharedMock?: boolean;
    /** The fixture's name (the mock's `name`). */
    name: string;
    /** The sync test's `Model` split on `,`. */
    models: string[];
    /** The mock's `providerConfigKey`: the test folder's parent's name. */
    providerConfigKey: string;
    /** The parsed `.test.json`, or `null` when legacy mocks are used. */
    fixture: any;
    /** Legacy `mocks/` files by path relative to `mocks/`, when no fixture exists. */
    legacy?: Record<string, unknown>;
    /** The provider's `proxy.paginate` defaults; absent when it has none. */
    pagination?: Record<string, unknown>;
    /** Whether the provider catalogue knows `providerConfigKey`. */
    providerKnown: boolean;
}

export interface ItResult {
    name: string;
    ok: boolean;
    message?: string;
}

// ------ vitest's mock functions, as far as the generated tests look at them

let invocation = 0;

interface MockState {
    calls: unknown[][];
    invocationCallOrder: number[];
}

function recorded<F extends (...args: any[]) => any>(f: F): F & { mock: MockState } {
    const mock: MockState = { calls: [], invocationCallOrder: [] };
    const wrapped = function (this: unknown, ...args: unknown[]) {
        append(mock.calls, args);
        append(mock.invocationCallOrder, ++invocation);
        return apply(f, this, args);
    } as unknown as F & { mock: MockState };
    defineProperty(wrapped, 'mock', { value: mock, writable: false, enumerable: true, configurable: false });
    return wrapped;
}

// ------ Request identity (§7.5) and matching (§7.6)

const IGNORED_HEADERS = new Set([
    'authorization',
    'user-agent',
    'nango-proxy-user-agent',
    'accept-encoding',
    'retries',
    'host',
    'connection-id',
    'provider-config-key',
    'nango-is-sync',
    'nango-is-script',
    'nango-is-dry-run',
    'nango-activity-log-id',
    'content-length',
    'accept',
    'base-url-override',
    'retry-on',
    'forward-headers-on-redirect'
]);

const HEX = '0123456789abcdef';
function sha1Hex(text: string): string {
    const digest = sha1(new TextEncoder().encode(text));
    let out = '';
    for (const b of digest) out += HEX[b >> 4]! + HEX[b & 15]!;
    return out;
}

function byKey(a: [string, string], b: [string, string]): number {
    return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/** The data identity of a request body (§7.5.6). */
function dataIdentity(data: unknown): string | undefined {
    if (!data) return undefined;
    let text: string | undefined;
    if (typeof data === 'string') text = data;
    else if (Buffer.isBuffer(data)) text = data.toString('base64');
    else text = JSON.stringify(data);
    if (text === undefined) return undefined;
    return text.length > 1000 ? `sha1:${sha1Hex(text)}` : text;
}

interface Identity {
    method: string;
    endpoint: string;
    params: [string, string][];
    headers: [string, string][];
    data?: string;
    hash: string;
}

function identityOf(cfg: any): Identity {
    const method = String(cfg.method ?? 'get').toLowerCase();
    const raw = String(cfg.endpoint ?? '');
    const url = /^https?:\/\//i.test(raw) ? new URL(raw) : new URL(raw.startsWith('/') ? raw : `/${raw}`, 'https://example.com');
    const params = cfg.params;
    if (typeof params === 'string') {
        for (const [k, v] of new URLSearchParams(params)) url.searchParams.append(k, v);
    } else if (params && typeof params === 'object') {
        for (const [k, v] of Object.entries(params)) {
            if (v === undefined) continue;
            url.searchParams.set(k, Array.isArray(v) ? v.join(',') : String(v));
        }
    }
    let endpoint = url.pathname;
    if (endpoint.startsWith('/proxy/')) endpoint = endpoint.slice('/proxy/'.length);
    if (endpoint.startsWith('/')) endpoint = endpoint.slice(1);
    const query: [string, string][] = [...url.searchParams].map(([k, v]) => [k, v]);
    query.sort(byKey);
    const seen = new Set<string>();
    const headers: [string, string][] = [];
    for (const [key, value] of Object.entries(cfg.headers ?? {})) {
        const k = key.replace(/^nango-proxy-/i, '');
        const lower = k.toLowerCase();
        if (seen.has(lower)) continue;
        seen.add(lower);
        if (IGNORED_HEADERS.has(lower)) continue;
        if (lower === 'content-type') {
            const v = String(value).toLowerCase();
            if (v === 'application/json' || v === 'undefined' || v.startsWith('application/x-www-form-urlencoded')) continue;
        }
        headers.push([k, String(value)]);
    }
    headers.sort(byKey);
    const data = dataIdentity(cfg.data);
    const doc: Record<string, unknown> = { method, endpoint, params: query, headers };
    if (data !== undefined) doc['data'] = data;
    return { method, endpoint, params: query, headers, data, hash: sha1Hex(JSON.stringify(doc)) };
}

function normalHeaders(h: Record<string, unknown> | [string, string][]): Map<string, string> {
    const out = new Map<string, string>();
    const entries = Array.isArray(h) ? h : Object.entries(h ?? {});
    for (const [k, v] of entries) {
        const lower = String(k).toLowerCase();
        if (out.has(lower)) continue;
        const value = String(v);
        if (lower === 'content-type' && value.toLowerCase().startsWith('application/x-www-form-urlencoded')) continue;
        out.set(lower, value);
    }
    return out;
}

function matches(entry: any, id: Identity, only: boolean): boolean {
    if (!entry || typeof entry !== 'object') return false;
    if (entry.hash !== undefined && entry.hash === id.hash) return true;
    const req = entry.request;
    if (req && typeof req === 'object') {
        const recorded = Object.entries(req.params ?? {});
        if (recorded.length !== id.params.length) return false;
        for (const [k, v] of recorded) {
            if (!id.params.some(([ik, iv]) => ik === k && iv === String(v))) return false;
        }
        const want = normalHeaders(req.headers ?? {});
        const have = normalHeaders(id.headers);
        if (want.size !== have.size) return false;
        for (const [k, v] of want) if (have.get(k) !== v) return false;
        if (req.data !== undefined && dataIdentity(req.data) !== id.data) return false;
        return true;
    }
    return req === undefined && only && id.params.length === 0;
}

// ------ Legacy `mocks/` (§7.11)

function legacyIdentity(cfg: any): { text: string; hash: string; method: string; endpoint: string; params: [string, unknown][]; headers: [string, unknown][]; data?: string } {
    const method = String(cfg.method ?? 'get').toLowerCase();
    const endpoint = String(cfg.endpoint ?? '').replace(/^\//, '');
    const params: [string, unknown][] = Object.entries(cfg.params && typeof cfg.params === 'object' ? cfg.params : {});
    params.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const first8 = [...IGNORED_HEADERS].slice(0, 8);
    const headers: [string, unknown][] = Object.entries(cfg.headers ?? {}).filter(([k]) => !first8.includes(k.toLowerCase()));
    headers.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const data = dataIdentity(cfg.data);
    const doc: Record<string, unknown> = { method, endpoint, params, headers };
    if (data !== undefined) doc['data'] = data;
    const text = JSON.stringify(doc);
    return { text, hash: sha1Hex(text), method, endpoint, params, headers, data };
}

/** `path.resolve`-like joining of `/`-separated parts (the legacy layout's paths). */
function joinPath(...parts: string[]): string {
    const out: string[] = [];
    for (const part of parts.join('/').split('/')) {
        if (part === '' || part === '.') continue;
        if (part === '..') out.pop();
        else out.push(part);
    }
    return out.join('/');
}

// ------ Equalities (§7.9)

function isObject(v: unknown): v is Record<string, unknown> {
    return v !== null && typeof v === 'object';
}

/**
 * vitest's `toEqual` (`strict` = `toStrictEqual` on JSON values). An
 * asymmetric matcher (`expect.any(…)`) counts on either side, as in
 * vitest, unless `actualMatchers` is false: the generated-shape checks
 * take matchers from the expected (fixture) side only, so a value the
 * script made cannot declare itself equal to anything.
 */
export function equals(a: unknown, b: unknown, strict = false, actualMatchers = true): boolean {
    if (objectIs(a, b)) return true;
    // expect.objectContaining(…) and the other asymmetric matchers.
    const matcher = (x: unknown): ((other: unknown) => unknown) | undefined => {
        const f = isObject(x) ? (x as any).asymmetricMatch : undefined;
        return typeof f === 'function' ? (other: unknown) => apply(f, x, [other]) : undefined;
    };
    const mb = matcher(b);
    if (mb) return Boolean(mb(a));
    if (actualMatchers) {
        const ma = matcher(a);
        if (ma) return Boolean(ma(b));
    }
    if (!isObject(a) || !isObject(b)) return false;
    // `toStrictEqual` checks types as vitest's `typeEquality` does: a
    // class instance is not a plain object with its fields, nor an object
    // without a prototype one with (arrays are arrays whatever their
    // realm). (Sparseness: the own keys compared below.)
    if (strict && !(isArray(a) && isArray(b)) && (a as any).constructor !== (b as any).constructor) return false;
    const ta = apply(objectToString, a, []);
    if (ta !== apply(objectToString, b, [])) return false;
    if (a instanceof DateClass && b instanceof DateClass) return objectIs(apply(dateGetTime, a, []), apply(dateGetTime, b, []));
    if (a instanceof RegExpClass && b instanceof RegExpClass) return String(a) === String(b);
    if (a instanceof Map && b instanceof Map) {
        if (a.size !== b.size) return false;
        for (const [k, v] of a) if (!b.has(k) || !equals(v, b.get(k), strict, actualMatchers)) return false;
        return true;
    }
    if (a instanceof Set && b instanceof Set) {
        if (a.size !== b.size) return false;
        for (const v of a) if (![...b].some((w) => equals(v, w, strict, actualMatchers))) return false;
        return true;
    }
    if (isArray(a)) {
        const bb = b as unknown[];
        const n = a.length;
        if (n !== bb.length) return false;
        for (let i = 0; i < n; i++) if (!equals(a[i], bb[i], strict, actualMatchers)) return false;
        if (!strict) return true;
    }
    // Own enumerable keys (those holding `undefined` left out unless
    // strict): as many on each side, each of `a`'s in `b` and equal.
    const ka = objectKeys(a);
    let counted = 0;
    for (let i = 0; i < ka.length; i++) {
        const k = ka[i]!;
        const v = a[k];
        if (!strict && v === undefined) continue;
        counted++;
        if (!hasOwn(b, k)) return false;
        if (!equals(v, b[k], strict, actualMatchers)) return false;
    }
    const kb = objectKeys(b);
    for (let i = 0; i < kb.length; i++) if (strict || b[kb[i]!] !== undefined) counted--;
    return counted === 0;
}

/**
 * vitest's `toEqual` (`strict`: `toStrictEqual`) of what a script made
 * (`a`) with an expected JSON value (`b`, from the fixture): no matcher on
 * either side, and nothing of `b` read but its own members (no tag, no
 * getter of a prototype: a script's getter on `Object.prototype` never
 * sees it).
 */
function jsonEquals(a: unknown, b: unknown, strict: boolean): boolean {
    if (!isObject(b)) return objectIs(a, b);
    if (!isObject(a)) return false;
    if (isArray(b)) {
        if (!isArray(a)) return false;
        const n = b.length;
        if (a.length !== n) return false;
        for (let i = 0; i < n; i++) if (!jsonEquals(a[i], b[i], strict)) return false;
        if (!strict) return true;
    } else if (isArray(a) || apply(objectToString, a, []) !== '[object Object]') {
        return false;
    }
    const ka = objectKeys(a);
    let counted = 0;
    for (let i = 0; i < ka.length; i++) {
        const k = ka[i]!;
        const v = (a as any)[k];
        if (!strict && v === undefined) continue;
        counted++;
        if (!hasOwn(b, k)) return false;
        if (!jsonEquals(v, (b as any)[k], strict)) return false;
    }
    const kb = objectKeys(b);
    for (let i = 0; i < kb.length; i++) if (strict || (b as any)[kb[i]!] !== undefined) counted--;
    return counted === 0;
}

/** [`difference`] for [`jsonEquals`]: `expected` read by its own members only. */
function jsonDifference(expected: unknown, actual: unknown, path: string): string {
    if (isArray(expected) && isArray(actual)) {
        const n = expected.length < actual.length ? expected.length : actual.length;
        for (let i = 0; i < n; i++) {
            if (!jsonEquals(actual[i], expected[i], true)) return jsonDifference(expected[i], actual[i], `${path}[${i}]`);
        }
        return `${path}: expected ${expected.length} items, got ${actual.length}`;
    }
    if (isObject(expected) && isObject(actual) && !isArray(expected) && !isArray(actual)) {
        const keys = objectKeys(expected);
        const theirs = objectKeys(actual);
        for (let i = 0; i < theirs.length; i++) if (!hasOwn(expected, theirs[i]!)) append(keys, theirs[i]!);
        for (let i = 0; i < keys.length; i++) {
            const k = keys[i]!;
            if (!jsonEquals(actual[k], own(expected, k), true)) return jsonDifference(own(expected, k), actual[k], `${path}.${k}`);
        }
    }
    return `${path}: expected ${short(expected)}, got ${short(actual)}`;
}

export function short(v: unknown): string {
    let text: string;
    try {
        // A Date prints as its ISO string, like the string it may be
        // compared with: say which side is the Date.
        text = v === undefined ? 'undefined' : (jsonStringify(v) ?? String(v));
        if (v instanceof Date) text = `a Date ${text}`;
    } catch {
        text = String(v);
    }
    return text.length > 160 ? `${apply(stringSlice, text, [0, 160])}…` : text;
}

/** Where two values first differ, for the failure message. */
export function difference(expected: unknown, actual: unknown, path: string): string {
    if (Array.isArray(expected) && Array.isArray(actual)) {
        for (let i = 0; i < Math.min(expected.length, actual.length); i++) {
            if (!equals(actual[i], expected[i], true)) return difference(expected[i], actual[i], `${path}[${i}]`);
        }
        return `${path}: expected ${expected.length} items, got ${actual.length}`;
    }
    if (isObject(expected) && isObject(actual) && !Array.isArray(expected) && !Array.isArray(actual)) {
        for (const k of new Set([...Object.keys(expected), ...Object.keys(actual)])) {
            if (!equals(actual[k], expected[k], true)) return difference(expected[k], actual[k], `${path}.${k}`);
        }
    }
    return `${path}: expected ${short(expected)}, got ${short(actual)}`;
}

// ------ The mocks (§7.3)

const MISSING = (what: string) => new Error(`Missing mock data for ${what}`);

/** lodash's `get`: a key that exists as written (`@odata.nextLink`) wins over a dotted path. */
function dotted(obj: unknown, path: string): unknown {
    if (obj !== null && typeof obj === 'object' && path in (obj as object)) return (obj as any)[path];
    let cur: any = obj;
    for (const part of path.split('.')) {
        if (cur === null || cur === undefined) return undefined;
        cur = cur[part];
    }
    return cur;
}

function nest(bag: Record<string, unknown>): Record<string, unknown> {
    const out: Record<string, any> = {};
    for (const [key, value] of Object.entries(bag)) {
        const parts = key.split('.');
        let cur = out;
        for (let i = 0; i < parts.length - 1; i++) {
            const p = parts[i]!;
            if (!isObject(cur[p])) cur[p] = {};
            cur = cur[p];
        }
        cur[parts[parts.length - 1]!] = value;
    }
    return out;
}

function nextLink(headers: Record<string, unknown>, rel: string): string | undefined {
    const link = Object.entries(headers ?? {}).find(([k]) => k.toLowerCase() === 'link')?.[1];
    if (typeof link !== 'string') return undefined;
    for (const part of link.split(/,(?=\s*<)/)) {
        const m = /<([^>]*)>(.*)/.exec(part.trim());
        if (!m) continue;
        const rels = /rel\s*=\s*"?([^";]+)"?/i.exec(m[2]!);
        if (rels && rels[1]!.split(/\s+/).includes(rel)) return m[1];
    }
    return undefined;
}

interface Context {
    spec: TestSpec;
}

// A mock's context (its test's fixture) is kept here, not on the mock: a
// script sees nothing of it but what the mock's members answer.
const MOCKS = new WeakMap<object, Context>();
/** The script's view of each mock ([`scriptView`]). */
const VIEWS = new WeakMap<object, object>();
/** Each view's mock's context. */
const VIEWED = new WeakMap<object, Context>();

/** The members a test reads its expectations with. */
const TEST_MEMBERS = ['getOutput', 'getBatchSaveData', 'getBatchDeleteData'] as const;

function isTestMember(prop: PropertyKey): boolean {
    return prop === 'getOutput' || prop === 'getBatchSaveData' || prop === 'getBatchDeleteData';
}

function refused(member: PropertyKey): Error {
    const name = String(member);
    return new Error(
        `nango.${name}${name === 'fixtureProvider' ? '' : '()'} is the test's, not the script's: a script under test cannot read what its test expects`
    );
}

/** The context of a mock, or of the script's view of one (the members a script may call). */
function specOf(self: unknown): TestSpec {
    const ctx = isObject(self) ? (mapGet(MOCKS, self) ?? mapGet(VIEWED, self)) : undefined;
    if (!ctx) throw new TypeError('not a nango/test mock');
    return ctx.spec;
}

/** The context of a mock itself, never of a script's view of it (the test's members). */
function testSpecOf(self: unknown, member: string): TestSpec {
    const ctx = isObject(self) ? mapGet(MOCKS, self) : undefined;
    if (!ctx) throw isObject(self) && mapGet(VIEWED, self) ? refused(member) : new TypeError('not a nango/test mock');
    return ctx.spec;
}

function legacyFile(spec: TestSpec, path: string): unknown {
    const files = spec.legacy ?? {};
    return files[joinPath(path)];
}

function legacyRequired(spec: TestSpec, path: string): unknown {
    const v = legacyFile(spec, path);
    if (v === undefined) throw new Error(`Failed to load mock data from mocks/${joinPath(path)}: no such file`);
    return v;
}

function nangoValue(spec: TestSpec, member: string): unknown {
    if (spec.fixture) return spec.fixture.nango?.[member];
    return legacyFile(spec, `nango/${member}.json`);
}

// What the tests expect, read from the context: what `getInput`,
// `getOutput`, `getBatchSaveData` and `getBatchDeleteData` answer, and
// what the generated-shape checks compare with whatever a script did to
// those members.
function inputOf(spec: TestSpec): unknown {
    if (!spec.fixture) return legacyFile(spec, `${spec.name}/input.json`);
    return spec.fixture.input;
}
function outputOf(spec: TestSpec): unknown {
    if (!spec.fixture) return legacyRequired(spec, `${spec.name}/output.json`);
    if (!('output' in spec.fixture)) throw MISSING('output');
    return spec.fixture.output;
}
function recordsOf(spec: TestSpec, which: 'batchSave' | 'batchDelete', model: string): unknown {
    if (!spec.fixture) return legacyRequired(spec, `${spec.name}/${model}/${which}.json`);
    return spec.fixture.nango?.[which]?.[model];
}

/** `nango/test`'s NangoActionMock: what the generated tests pass to `exec`. */
export class NangoActionMock {
    providerConfigKey: string;
    ActionError = ActionError;
    log = recorded((..._args: unknown[]) => undefined);
    fixtureProvider: Promise<{ mockData: unknown }>;

    constructor(ctx: Context) {
        apply(weakSet, MOCKS, [this, ctx]);
        // The test's members are the mock's own: a script that replaces
        // them on the class's prototype (`globalThis.vitest`) changes
        // nothing a test reads. (Its view of the mock refuses them.)
        for (let i = 0; i < TEST_MEMBERS.length; i++) {
            const name = TEST_MEMBERS[i]!;
            defineProperty(this, name, { value: TEST_METHODS[name], writable: true, enumerable: false, configurable: true });
        }
        const spec = ctx.spec;
        this.providerConfigKey = spec.providerConfigKey;
        this.fixtureProvider = resolved(holder('mockData', spec.fixture ?? undefined));
        this.trackDeletesStart = recorded(async (_m: string) => nangoValue(spec, 'trackDeletesStart'));
        this.trackDeletesEnd = recorded(async (_m: string) => nangoValue(spec, 'trackDeletesEnd'));
        this.deleteRecordsFromPreviousExecutions = recorded(async (_m: string) => nangoValue(spec, 'deleteRecordsFromPreviousExecutions'));
        this.updateMetadata = recorded(async (_x: unknown) => nangoValue(spec, 'updateMetadata'));
    }

    trackDeletesStart;
    trackDeletesEnd;
    deleteRecordsFromPreviousExecutions;
    updateMetadata;

    async getConnection(..._args: unknown[]): Promise<unknown> {
        const spec = specOf(this);
        if (!spec.fixture) return legacyRequired(spec, 'nango/getConnection.json');
        const v = spec.fixture.nango?.getConnection;
        if (v === undefined) throw MISSING('getConnection');
        return v;
    }
    async getMetadata(): Promise<unknown> {
        const spec = specOf(this);
        if (!spec.fixture) return legacyRequired(spec, 'nango/getMetadata.json');
        const v = spec.fixture.nango?.getMetadata;
        if (v === undefined) throw MISSING('getMetadata');
        return v;
    }
    getWebhookURL(): string {
        return 'https://example.com/webhook';
    }
    async zodValidateInput({ input }: { input: unknown }): Promise<{ data: unknown }> {
        return { data: input };
    }
    async getInput(): Promise<unknown> {
        return inputOf(specOf(this));
    }
    async getOutput(): Promise<unknown> {
        return outputOf(testSpecOf(this, 'getOutput'));
    }
    async getBatchSaveData(model: string): Promise<unknown> {
        return recordsOf(testSpecOf(this, 'getBatchSaveData'), 'batchSave', model);
    }
    async getBatchDeleteData(model: string): Promise<unknown> {
        return recordsOf(testSpecOf(this, 'getBatchDeleteData'), 'batchDelete', model);
    }

    async proxy(cfg: any): Promise<unknown> {
        return this.answer(cfg);
    }
    async proxyData(cfg: any): Promise<unknown> {
        return this.answer(cfg);
    }
    async get(cfg: any): Promise<unknown> {
        return this.answer({ ...cfg, method: 'get' });
    }
    async post(cfg: any): Promise<unknown> {
        return this.answer({ ...cfg, method: 'post' });
    }
    async put(cfg: any): Promise<unknown> {
        return this.answer({ ...cfg, method: 'put' });
    }
    async patch(cfg: any): Promise<unknown> {
        return this.answer({ ...cfg, method: 'patch' });
    }
    async delete(cfg: any): Promise<unknown> {
        return this.answer({ ...cfg, method: 'delete' });
    }

    private answer(cfg: any): { data: unknown; headers: unknown; status: unknown } {
        const spec = specOf(this);
        if (!spec.fixture) return this.legacyAnswer(cfg);
        const id = identityOf(cfg);
        const api = spec.fixture.api?.[id.method];
        let found = api?.[id.endpoint];
        if (found === undefined) found = api?.[`/${id.endpoint}`];
        if (found !== undefined) {
            const list = Array.isArray(found) ? found : [found];
            for (const entry of list) {
                if (matches(entry, id, list.length === 1)) {
                    return { data: entry.response, headers: entry.headers, status: entry.status };
                }
            }
        }
        throw new Error(
            `No mock found for ${id.method.toUpperCase()} ${id.endpoint} (normalized: ${id.endpoint}) with hash ${id.hash}; ` +
                `params ${JSON.stringify(id.params)}, headers ${JSON.stringify(id.headers)}${id.data === undefined ? '' : `, data ${short(id.data)}`}. ` +
                'Re-record it with `sluice dryrun … --save`.'
        );
    }

    private legacyAnswer(cfg: any): { data: unknown; headers: unknown; status: unknown } {
        const id = legacyIdentity(cfg);
        const spec = specOf(this);
        const dir = joinPath(`nango/${id.method}/proxy/${id.endpoint}/${spec.name}`);
        const files = spec.legacy ?? {};
        const inDir = Object.keys(files).filter((p) => p.startsWith(`${dir}/`) && !p.slice(dir.length + 1).includes('/'));
        if (inDir.length > 0) {
            let file: any = files[`${dir}/${id.hash}.json`];
            if (file === undefined) {
                file = inDir
                    .map((p) => files[p] as any)
                    .find((f) => {
                        const ri = f?.requestIdentity;
                        if (!ri) return false;
                        const rp: [string, unknown][] = ri.params ?? [];
                        if (rp.length !== id.params.length) return false;
                        for (const [k, v] of rp) if (!id.params.some(([ik, iv]) => ik === k && String(iv) === String(v))) return false;
                        // A content type the unified identity drops is not compared either.
                        const dropped = ([k, v]: [string, unknown]) => {
                            const value = String(v).toLowerCase();
                            return k.toLowerCase() === 'content-type' && (value === 'undefined' || value === 'application/json');
                        };
                        // A request that carries one compares it: equal on both
                        // sides it matches, missing from the recording it
                        // does not (as the original's comparison).
                        const sent = id.headers.some(([k]) => k.toLowerCase() === 'content-type');
                        const rh: [string, unknown][] = (ri.headers ?? []).filter((h: [string, unknown]) => sent || !dropped(h));
                        const ih = id.headers;
                        if (rh.length > 0 || ih.length > 0) {
                            if (rh.length !== ih.length) return false;
                            for (const [k, v] of rh) if (!ih.some(([ik, iv]) => ik === k && String(iv) === String(v))) return false;
                        }
                        if (ri.data !== undefined || id.data !== undefined) {
                            if (String(ri.data) !== String(id.data)) return false;
                        }
                        return true;
                    });
            }
            if (file === undefined) {
                throw new Error(`Failed to load mock data for ${id.method.toUpperCase()} ${id.endpoint} with identity ${id.text}`);
            }
            return { data: file.response, headers: file.headers, status: file.status };
        }
        const whole = files[`${dir}.json`];
        if (whole === undefined) throw new Error(`Failed to load mock data from mocks/${dir}.json: no such file`);
        return { data: whole, headers: undefined, status: undefined };
    }

    /** Pages over the recordings with the production algorithm (§7.7, §5.6). */
    async *paginate(cfg: any): AsyncGenerator<unknown, void, void> {
        cfg.method = cfg.method ?? 'get';
        const spec = specOf(this);
        if (!spec.providerKnown) throw new Error(`Provider config not found for ${spec.providerConfigKey}`);
        const p: Record<string, any> = { ...(spec.pagination ?? {}), ...(cfg.paginate ?? {}) };
        cfg.paginate = p;
        const method = String(cfg.method).toLowerCase();
        const bodyMode = method === 'post' || method === 'put' || method === 'patch';
        const bag: Record<string, any> = (bodyMode ? cfg.data : cfg.params) ?? {};
        // As the original's mock: a limit with no name is sent as the
        // parameter `undefined` (and recorded so).
        if (p['limit']) bag[String(p['limit_name_in_request'])] = p['limit'];
        const write = () => {
            if (bodyMode) cfg.data = nest(bag);
            else cfg.params = bag;
        };
        if (!spec.fixture) {
            yield* this.legacyPaginate(cfg, p, bag, write);
            return;
        }
        const type = p['type'];
        if (!type) throw new Error('Pagination type is required');
        const pageOf = (resp: any) => (p['response_path'] ? dotted(resp.data, p['response_path']) : resp.data);
        const onPage = async (nextPageParam: unknown, response: unknown) => {
            if (typeof p['on_page'] === 'function') await p['on_page']({ nextPageParam, response });
        };
        if (type === 'cursor') {
            let cursor: unknown;
            for (;;) {
                if (cursor !== undefined) bag[p['cursor_name_in_request']] = cursor;
                write();
                const resp = this.answer(cfg);
                const page: any = pageOf(resp);
                if (!page || !page.length) return;
                yield page;
                const next = dotted(resp.data, p['cursor_path_in_response']);
                let nextCursor: unknown;
                if (typeof next === 'string' && next.trim().length > 0) nextCursor = next.trim();
                else if (typeof next === 'number') nextCursor = next;
                // on_page sees every page, the last one included.
                await onPage(nextCursor, resp);
                if (nextCursor === undefined) return;
                cursor = nextCursor;
            }
        } else if (type === 'link') {
            write();
            let previous: string | undefined;
            for (;;) {
                const resp: any = this.answer(cfg);
                yield pageOf(resp);
                let next: string | undefined;
                if (p['link_rel_in_response_header']) next = nextLink(resp.headers ?? {}, p['link_rel_in_response_header']);
                if (!next && p['link_path_in_response_body']) {
                    const v = dotted(resp.data, p['link_path_in_response_body']);
                    next = typeof v === 'string' ? v : undefined;
                }
                await onPage(next, resp);
                if (!next || next === previous) return;
                previous = next;
                if (/^https?:\/\//i.test(next)) {
                    const u = new URL(next);
                    cfg.baseUrlOverride = u.origin;
                    cfg.endpoint = u.pathname + u.search;
                } else {
                    cfg.endpoint = next;
                }
                delete cfg.params;
            }
        } else if (type === 'offset') {
            let offset = Number(p['offset_start_value'] ?? 0) || 0;
            for (;;) {
                bag[p['offset_name_in_request']] = bodyMode ? offset : String(offset);
                write();
                const resp = this.answer(cfg);
                const page: any = pageOf(resp);
                if (!page || !page.length) return;
                yield page;
                if (p['limit'] !== undefined && p['limit'] !== null && page.length < Number(p['limit'])) return;
                await onPage(offset, resp);
                offset += p['offset_calculation_method'] === 'per-page' ? 1 : page.length;
            }
        } else {
            throw new Error(`Pagination type ${String(type)} is not supported. Only cursor, link and offset pagination types are supported.`);
        }
    }

    /**
     * The older harness's paginate over `mocks/` (compat/README.md §1.4):
     * direct-property paths for cursor and link, a recording without
     * headers yielded once as it is.
     */
    private async *legacyPaginate(cfg: any, p: Record<string, any>, bag: Record<string, any>, write: () => void): AsyncGenerator<unknown, void, void> {
        const type = p['type'];
        const path: string | undefined = p['response_path'] || undefined;
        function* legacyYield(data: any): Generator<unknown, void, void> {
            if (Array.isArray(data)) yield data;
            if (path) {
                yield data?.[path];
            } else if (isObject(data)) {
                for (const v of Object.values(data)) if (Array.isArray(v)) yield v;
            }
        }
        const direct = (data: any) => (path ? data?.[path] : data);
        if (type === 'cursor') {
            let cursor: unknown;
            for (;;) {
                if (cursor !== undefined) bag[p['cursor_name_in_request']] = cursor;
                write();
                const resp: any = this.answer(cfg);
                if (!resp.headers) {
                    yield* legacyYield(resp.data);
                    return;
                }
                const page = direct(resp.data);
                if (!page || !page.length) return;
                yield page;
                const next = resp.data?.[p['cursor_path_in_response']];
                if (typeof next === 'string' && next.trim().length > 0) cursor = next;
                else if (typeof next === 'number') cursor = next;
                else return;
            }
        } else if (type === 'link') {
            write();
            for (;;) {
                const resp: any = this.answer(cfg);
                if (!resp.headers) {
                    yield* legacyYield(resp.data);
                    return;
                }
                const page = direct(resp.data);
                if (!page || !page.length) return;
                yield page;
                let next: string | undefined;
                if (p['link_rel_in_response_header']) next = nextLink(resp.headers, p['link_rel_in_response_header']);
                if (!next && p['link_path_in_response_body']) {
                    const v = dotted(resp.data, p['link_path_in_response_body']);
                    next = typeof v === 'string' ? v : undefined;
                }
                if (!next) return;
                if (/^https?:\/\//i.test(next)) {
                    const u = new URL(next);
                    cfg.endpoint = u.pathname + u.search;
                } else {
                    cfg.endpoint = next;
                }
                cfg.params = {};
            }
        } else if (type === 'offset') {
            const inBody = bodyMode(cfg);
            let offset = Number(p['offset_start_value'] || 0);
            for (;;) {
                bag[p['offset_name_in_request']] = inBody ? offset : String(offset);
                write();
                const resp: any = this.answer(cfg);
                if (!resp.headers) {
                    yield* legacyYield(resp.data);
                    return;
                }
                const page: any = path ? dotted(resp.data, path) : resp.data;
                if (!page || !page.length) return;
                yield page;
                if (p['limit'] && page.length < p['limit']) return;
                offset += p['offset_calculation_method'] === 'per-page' ? 1 : page.length;
            }
        } else {
            throw new Error(`Invalid pagination type: ${String(type)}`);
        }
    }
}

function bodyMode(cfg: any): boolean {
    const m = String(cfg.method ?? 'get').toLowerCase();
    return m === 'post' || m === 'put' || m === 'patch';
}

/** `nango/test`'s NangoSyncMock over an action mock class. */
function syncMockOf(Base: typeof NangoActionMock) {
    return class NangoSyncMock extends Base {
        // Not the implicit `constructor(...args)`, whose spread a
        // script's `Array.prototype[Symbol.iterator]` may reach.
        constructor(ctx: Context) {
            super(ctx);
        }
        lastSyncDate = null;
        batchSave = recorded(async (_records: unknown[], _model: string) => undefined);
        batchDelete = recorded(async (_records: unknown[], _model: string) => undefined);
        private checkpoint: unknown = null;

        async getCheckpoint(): Promise<unknown> {
            return this.checkpoint;
        }
        async saveCheckpoint(c: unknown): Promise<void> {
            this.checkpoint = c;
        }
        async clearCheckpoint(): Promise<void> {
            this.checkpoint = null;
        }
        async *listRecords(): AsyncGenerator<never, void, void> {
            return;
        }
    };
}

/** `nango/test`'s NangoSyncMock. */
export const NangoSyncMock = syncMockOf(NangoActionMock);
const NangoActionMockBase = NangoActionMock;
const SyncMockBase = NangoSyncMock;

/** The test's members as the harness defines them (each mock holds them as its own). */
const TEST_METHODS = {
    getOutput: NangoActionMock.prototype.getOutput,
    getBatchSaveData: NangoActionMock.prototype.getBatchSaveData,
    getBatchDeleteData: NangoActionMock.prototype.getBatchDeleteData
};

const preventExtensions = Object.preventExtensions;
/**
 * A mock class whose parent no script can swap (`Object.setPrototypeOf`),
 * so constructing it hands the test's context to the harness's
 * constructor only. Its prototype stays open: scripts add members there
 * (connectsecure's `uncontrolledFetch`).
 */
function sealedClass<C extends object>(c: C): C {
    preventExtensions(c);
    return c;
}
sealedClass(NangoActionMockBase);
sealedClass(SyncMockBase);

/**
 * The harness's own prototypes (each script's classes extend them) take
 * no new member and none of theirs can become a getter: a script's
 * members go on its own classes' prototypes, where it may also replace
 * the harness's by assignment, as the original allows.
 */
function fixedMembers(proto: object): void {
    const names = getOwnPropertyNames(proto);
    for (let i = 0; i < names.length; i++) {
        const d = reflectOwn(proto, names[i]!);
        if (d && 'value' in d) defineProperty(proto, names[i]!, { value: d.value, writable: true, enumerable: d.enumerable, configurable: false });
    }
    preventExtensions(proto);
}
fixedMembers(NangoActionMockBase.prototype);
fixedMembers(SyncMockBase.prototype);

/**
 * What a script's `exec` (and `onWebhook`) is given for a mock: the mock
 * as it is, less what the test reads its expectations with. Reading or
 * replacing `getOutput`, `getBatchSaveData` or `getBatchDeleteData`
 * through it throws ("… is the test's, not the script's"), and its
 * `fixtureProvider` holds only the recorded requests (`mockData.api`,
 * which two sendgrid scripts read to replay their recorded window).
 * Anything but a mock is given as it is (production's `nango`, a test's
 * own fake). The original's mock has no such view: a script there can
 * return `await nango.getOutput()` and pass its test.
 */
export function scriptView(nango: unknown): unknown {
    if (!isObject(nango)) return nango;
    const ctx = mapGet(MOCKS, nango);
    if (!ctx) return nango;
    const known = mapGet(VIEWS, nango);
    if (known) return known;
    let provider: Promise<{ mockData: unknown }> | undefined;
    const scriptProvider = () => {
        const fixture = ctx.spec.fixture;
        provider ??= resolved(holder('mockData', fixture ? { api: own(fixture, 'api') } : undefined));
        return provider;
    };
    const guarded = (prop: PropertyKey) => isTestMember(prop) || prop === 'fixtureProvider';
    const view = new ProxyClass(nango, {
        get(target, prop, receiver) {
            if (isTestMember(prop)) throw refused(prop);
            if (prop === 'fixtureProvider' && hasOwn(target, prop)) return scriptProvider();
            return reflectGet(target, prop, receiver);
        },
        getOwnPropertyDescriptor(target, prop) {
            if (isTestMember(prop)) throw refused(prop);
            const d = reflectOwn(target, prop);
            if (prop === 'fixtureProvider' && d && d.configurable) {
                return { value: scriptProvider(), writable: true, enumerable: d.enumerable, configurable: true };
            }
            return d;
        },
        set(target, prop, value, receiver) {
            if (guarded(prop)) throw refused(prop);
            return reflectSet(target, prop, value, receiver);
        },
        defineProperty(target, prop, desc) {
            if (guarded(prop)) throw refused(prop);
            return reflectDefine(target, prop, desc);
        },
        deleteProperty(target, prop) {
            if (guarded(prop)) throw refused(prop);
            return reflectDelete(target, prop);
        }
    });
    apply(weakSet, VIEWS, [nango, view]);
    apply(weakSet, VIEWED, [view, ctx]);
    return view;
}

/** What `globalThis.vitest` holds: the mock classes. */
export interface VitestScope {
    NangoActionMock: typeof NangoActionMock;
    NangoSyncMock: typeof NangoSyncMock;
}

/** Installs `globalThis.vitest` as the harness's setup file does (scripts look at it at load time). */
export function installVitestGlobal(): void {
    setVitest(NangoActionMock, NangoSyncMock);
}

/** What `globalThis.vitest` answers: set by the harness only. */
let vitestNow: VitestScope | undefined;
// The harness's own, before any script loads: a script can neither
// replace it (nor put a getter there that hands a test its own mock
// class) nor swap the classes it holds (frozen).
defineProperty(globalThis, 'vitest', {
    get: () => vitestNow,
    set: () => undefined,
    enumerable: false,
    configurable: false
});
function setVitest(A: typeof NangoActionMock, S: typeof NangoSyncMock): void {
    vitestNow = objectFreeze({ NangoActionMock: A, NangoSyncMock: S });
}

/** Each script's mock classes, as the harness made them (`globalThis.vitest` is the script's to change). */
const scopes: Record<string, VitestScope> = Object.create(null);

/**
 * Gives the script module about to load its own `globalThis.vitest`: mock
 * classes whose prototypes only it sees. vitest loads each test file's
 * script alone, so what a script installs on `NangoActionMock.prototype`
 * at load (connectsecure's `uncontrolledFetch` shims differ from script
 * to script) must not reach another script's test. The bundle calls this
 * before each script's module.
 */
export function vitestScope(script: string): void {
    const A = sealedClass(
        class NangoActionMock extends NangoActionMockBase {
            constructor(ctx: Context) {
                super(ctx);
            }
        }
    );
    const S = sealedClass(syncMockOf(A));
    defineProperty(scopes, script, { value: objectFreeze({ NangoActionMock: A, NangoSyncMock: S }), enumerable: true });
    setVitest(A, S);
}

/** The mock classes `script`'s module saw when it loaded. */
export function scopeOf(script: string): VitestScope | undefined {
    return hasOwn(scopes, script) ? scopes[script] : undefined;
}

// ------ The generated test shapes (§7.2)

type Definition = { type?: string; exec?: (...args: any[]) => unknown };

function describeError(e: unknown): string {
    if (e instanceof Error) return `${e.name}: ${e.message}`;
    return short(e);
}

/**
 * Calls `ok` or `err` when the built-in promise `p` settles, through the
 * `then` taken before scripts loaded, on `p` itself: a `then`,
 * `constructor` or `Symbol.species` a script put on `Promise` takes no
 * part (`await` would read `p.constructor`, and with a foreign one call
 * the script's `then`, which can turn a rejection into success).
 */
function whenSettled<T>(p: Promise<T>, ok: (value: T) => void, err: (e: unknown) => void): void {
    defineProperty(p, 'constructor', { value: undefined, writable: false, enumerable: false, configurable: false });
    apply(promiseThen, p, [ok, err]);
}

/** Runs one `it`: its result is appended, then `next` runs (whatever `body` did). */
function it(name: string, results: ItResult[], body: () => Promise<void>, next: () => void): void {
    let called = false;
    const done = (ok: boolean, e?: unknown) => {
        if (called) return;
        called = true;
        if (ok) append(results, { name, ok: true });
        else {
            let message = 'failed';
            try {
                message = describeError(e);
            } catch {
                // An error whose name or message throws: still a failure.
            }
            append(results, { name, ok: false, message });
        }
        next();
    };
    try {
        whenSettled(
            body(),
            () => done(true),
            (e) => done(false, e)
        );
    } catch (e) {
        done(false, e);
    }
}

/**
 * `runTest`'s results as the bytes the host reads, serialised with the
 * built-ins taken before scripts loaded (`JSON.stringify`,
 * `TextEncoder.prototype.encode`), and settled without a `then` lookup a
 * script can answer: the promise returned has the built-in `then` as its
 * own and no constructor, and the bytes it resolves with have no `then`.
 * `fail` maps an error of the harness to what the export rejects with.
 */
export function runTestBytes(given: Uint8Array, def: () => Definition, scope: () => VitestScope | undefined, fail: (e: unknown) => unknown): Promise<Uint8Array> {
    const out = new PromiseClass<Uint8Array>((resolve, reject) => {
        const failed = (e: unknown) => {
            let payload: unknown = e;
            try {
                payload = fail(e);
            } catch {
                // Rejected all the same.
            }
            reject(payload);
        };
        try {
            whenSettled(
                runTest(given, def(), scope()),
                (results) => {
                    try {
                        const text = jsonStringify(results) as string;
                        const bytes = apply(textEncode, UTF8_RESULTS, [text]) as Uint8Array;
                        if (bytes.length === 0 && text.length > 0) throw new RangeError('out of memory: the test results could not be encoded');
                        defineProperty(bytes, 'then', { value: undefined, writable: false, enumerable: false, configurable: false });
                        resolve(bytes);
                    } catch (e) {
                        failed(e);
                    }
                },
                failed
            );
        } catch (e) {
            failed(e);
        }
    });
    defineProperty(out, 'constructor', { value: undefined, writable: false, enumerable: false, configurable: false });
    defineProperty(out, 'then', { value: promiseThen, writable: false, enumerable: false, configurable: false });
    return out;
}

class Expectation extends Error {
    constructor(message: string) {
        super(message);
        this.name = 'AssertionError';
    }
}

/** Runs one test file's `it`s against `def` (the script's default export),
 * with the mock classes its module loaded with. The promise (the
 * built-in's) resolves with results that have no prototypes. */
export function runTest(given: Uint8Array | TestSpec, def: Definition, scope?: VitestScope): Promise<ItResult[]> {
    return new PromiseClass<ItResult[]>((resolve, reject) => {
        try {
            startTest(given, def, scope, (results) => resolve(sealed(results)), reject);
        } catch (e) {
            reject(e);
        }
    });
}

function startTest(given: Uint8Array | TestSpec, def: Definition, scope: VitestScope | undefined, finish: (results: ItResult[]) => void, fail: (e: unknown) => void): void {
    // The spec's bytes are decoded and parsed with the built-ins taken
    // before scripts loaded, and its containers made prototype-less. The
    // text is kept: each fresh mock reads the recording anew, as the
    // original's reads its file (a response one run changed is not the
    // next mock's).
    const text: string = isObject(given) && hasOwn(given, 'kind') ? jsonStringify(given) : (apply(textDecode, UTF8_SPEC, [given]) as string);
    const reread = (): TestSpec => prepareSpec(jsonParse(text));
    const spec = reread();
    const { NangoActionMock, NangoSyncMock } = scope ?? { NangoActionMock: NangoActionMockBase, NangoSyncMock: SyncMockBase };
    setVitest(NangoActionMock, NangoSyncMock);
    if (spec.kind === 'file') {
        whenSettled(runHandWritten(spec, { NangoActionMock, NangoSyncMock }, reread), finish, fail);
        return;
    }
    const results: ItResult[] = [];
    if (!def || typeof def.exec !== 'function') {
        append(results, { name: 'load', ok: false, message: 'the script has no default export with an exec function' });
        finish(results);
        return;
    }
    // The script runs on its view of the mock (`scriptView`); what it is
    // expected to do is read from the spec, and what it did from the
    // mock's recorders as the mock was made, with the built-ins captured
    // above: nothing the script replaces or patches takes part.
    const ctx: Context = { spec };
    if (spec.kind === 'action') {
        const mock = new NangoActionMock(ctx);
        it(
            'should output the action output that is expected',
            results,
            async () => {
                const input = inputOf(spec);
                const response = await def.exec!(scriptView(mock), input);
                const output = outputOf(spec);
                if (!jsonEquals(response, output, false)) throw new Expectation(`action output differs: ${jsonDifference(output, response, 'output')}`);
            },
            () => finish(results)
        );
        return;
    }
    const models = spec.models;
    type Recorder = { mock: MockState };
    interface Recorders {
        batchSave: Recorder;
        batchDelete: Recorder;
        trackDeletesStart: Recorder;
        trackDeletesEnd: Recorder;
    }
    const recordersOf = (m: InstanceType<typeof NangoSyncMock>): Recorders => ({
        batchSave: m.batchSave,
        batchDelete: m.batchDelete,
        trackDeletesStart: m.trackDeletesStart,
        trackDeletesEnd: m.trackDeletesEnd
    });
    const sharedMock = spec.sharedMock ? new NangoSyncMock(ctx) : undefined;
    const shared = sharedMock && { mock: sharedMock, recorders: recordersOf(sharedMock) };
    let mocks = 0;
    const fresh = () => {
        if (shared) return shared;
        // The first mock reads the spec as parsed; each later one its own
        // copy of the recording.
        const mock = new NangoSyncMock(mocks++ === 0 ? ctx : { spec: reread() });
        return { mock, recorders: recordersOf(mock) };
    };
    /** The records of every call of `model`, one array (the tests' `flatMap`), JSON-normalised. */
    const recordsCalled = (r: Recorder, model: string): unknown => {
        const calls = r.mock.calls;
        const all: unknown[] = [];
        for (let i = 0; i < calls.length; i++) {
            const call = calls[i]!;
            if (call[1] !== model) continue;
            const records = call[0];
            if (isArray(records)) for (let j = 0; j < records.length; j++) append(all, records[j]);
            else append(all, records);
        }
        return jsonParse(jsonStringify(all));
    };
    const calledWith = (r: Recorder, args: unknown[]): boolean => {
        const calls = r.mock.calls;
        for (let i = 0; i < calls.length; i++) if (jsonEquals(calls[i], args, false)) return true;
        return false;
    };
    const second = spec.second ?? 'delete';
    const deletes = async () => {
        const { mock, recorders } = fresh();
        await def.exec!(scriptView(mock));
        for (let i = 0; i < models.length; i++) {
            const model = models[i]!;
            if (second === 'track' || second === 'track-ordered') {
                if (!calledWith(recorders.trackDeletesStart, [model])) throw new Expectation(`trackDeletesStart was not called with ${model}`);
                if (!calledWith(recorders.trackDeletesEnd, [model])) throw new Expectation(`trackDeletesEnd was not called with ${model}`);
                continue;
            }
            if (second === 'no-delete') continue;
            const expected: any = recordsOf(spec, 'batchDelete', model);
            if (!(expected && expected.length > 0)) continue;
            if (second === 'delete-some') {
                if (!calledWith(recorders.batchDelete, [expected, model])) {
                    throw new Expectation(`no batchDelete call of ${model} equals the ${expected.length} recorded records`);
                }
                continue;
            }
            const actual = recordsCalled(recorders.batchDelete, model);
            if (!jsonEquals(actual, expected, true)) throw new Expectation(`${model} batchDelete differs: ${jsonDifference(expected, actual, model)}`);
        }
        if (second === 'no-delete' && recorders.batchDelete.mock.calls.length > 0) {
            throw new Expectation('batchDelete was called');
        }
        if (second === 'track-ordered') {
            const start = recorders.trackDeletesStart.mock.invocationCallOrder[0];
            const end = recorders.trackDeletesEnd.mock.invocationCallOrder[0];
            if (!(start !== undefined && end !== undefined && start < end)) throw new Expectation('trackDeletesStart was not called before trackDeletesEnd');
        }
    };
    it(
        'should get, map correctly the data and batchSave the result',
        results,
        async () => {
            const { mock, recorders } = fresh();
            await def.exec!(scriptView(mock));
            for (let i = 0; i < models.length; i++) {
                const model = models[i]!;
                const expected = recordsOf(spec, 'batchSave', model);
                const actual = recordsCalled(recorders.batchSave, model);
                if (!jsonEquals(actual, expected, true)) throw new Expectation(`${model} batchSave differs: ${jsonDifference(expected, actual, model)}`);
            }
        },
        () => {
            if (second === 'none') finish(results);
            else {
                try {
                    it('should get, map correctly the data and batchDelete the result', results, deletes, () => finish(results));
                } catch (e) {
                    fail(e);
                }
            }
        }
    );
}

// ------ Test files written by hand

/** The members `nango/test`'s mocks make `vi.fn`s of (so a test can spy on,
 * fix or count them); `batchSave` and `batchDelete` are bare `vi.fn()`s. */
const MOCKED_MEMBERS = [
    'log',
    'getConnection',
    'getMetadata',
    'updateMetadata',
    'deleteRecordsFromPreviousExecutions',
    'trackDeletesStart',
    'trackDeletesEnd',
    'paginate',
    'get',
    'post',
    'patch',
    'put',
    'delete',
    'proxy',
    'getWebhookURL',
    'zodValidateInput',
    'getCheckpoint',
    'saveCheckpoint',
    'clearCheckpoint',
    'listRecords'
];

function mockMembers(mock: any, sync: boolean): void {
    // Read and bound through the script's view of the mock, and defined
    // (not assigned): a getter, setter or method a script put on the
    // mock class's prototype runs with the view, never the mock itself
    // (which answers getOutput & co).
    const view = scriptView(mock);
    const set = (name: string, value: unknown) => defineProperty(mock, name, { value, writable: true, enumerable: true, configurable: true });
    for (let i = 0; i < MOCKED_MEMBERS.length; i++) {
        const name = MOCKED_MEMBERS[i]!;
        const f = reflectGet(mock, name, view);
        if (typeof f === 'function' && !isMockFunction(f)) {
            set(
                name,
                vi.fn(function (this: unknown, ...args: unknown[]) {
                    return apply(f, view, args);
                })
            );
        }
    }
    if (sync) {
        set('batchSave', vi.fn());
        set('batchDelete', vi.fn());
    }
}

/**
 * Runs a bundled test file: its mocks are the original's (constructed with
 * `{dirname, name, Model}`, every member a `vi.fn`), answering from the
 * fixture the host found for the file, with the mock classes its script's
 * module loaded with.
 */
async function runHandWritten(spec: TestSpec, scope: VitestScope, reread: () => TestSpec): Promise<ItResult[]> {
    // Each mock reads its recording anew, as the original's reads its
    // file when it is made: what one mock's script changed in a response
    // is not another mock's.
    let made = 0;
    const ctxOf = (options: any): Context => {
        const own = made++ === 0 ? spec : reread();
        const name = options?.name;
        const fixtures = own.fixtures;
        if (typeof name !== 'string' || !fixtures || !hasOwn(fixtures, name)) return { spec: own };
        return { spec: { ...own, name, fixture: fixtures[name] } };
    };
    const A = sealedClass(
        class NangoActionMock extends scope.NangoActionMock {
            constructor(options?: unknown) {
                super(ctxOf(options));
                mockMembers(this, false);
            }
        }
    );
    const S = sealedClass(
        class NangoSyncMock extends scope.NangoSyncMock {
            constructor(options?: unknown) {
                super(ctxOf(options));
                mockMembers(this, true);
            }
        }
    );
    setVitest(A, S);
    if (!spec.file) return [{ name: 'load', ok: false, message: 'no test file named' }];
    setTestFiles(spec.files ?? {});
    return runFile(spec.file);
}

// Scripts look for `globalThis.vitest` when their module loads (§7.10),
// which componentize-js runs once before its snapshot.
installVitestGlobal();
