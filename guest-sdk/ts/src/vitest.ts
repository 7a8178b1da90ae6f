// `sluice test` on test files written by hand: the part of vitest 2 they
// use (describe/it and hooks, expect and its matchers, vi.fn/vi.spyOn and
// the mock functions' API, a frozen clock), running inside the component
// like the rest of the harness. The entry imports each bundled test file
// after `vitestFile(key)`: its `describe`/`it` calls are recorded then, and
// their bodies run when the host asks for that file (`runFile`), with the
// fixture the host passed. Anything of vitest not here is refused by name.

import { equals, difference, short, scriptView } from './harness';

type Fn = (...args: any[]) => any;

// ------ Mock functions (vi.fn, vi.spyOn)

let callOrder = 0;

interface MockState {
    calls: unknown[][];
    results: { type: 'return' | 'throw'; value: unknown }[];
    instances: unknown[];
    invocationCallOrder: number[];
    lastCall: unknown[] | undefined;
}

export interface Mock extends Fn {
    mock: MockState;
    _isMockFunction: true;
    [key: string]: any;
}

const allMocks = new Set<Mock>();

function freshState(): MockState {
    return { calls: [], results: [], instances: [], invocationCallOrder: [], lastCall: undefined };
}

export function isMockFunction(f: unknown): f is Mock {
    return typeof f === 'function' && (f as Mock)._isMockFunction === true;
}

/** vi.fn(impl): a function that records its calls; `restore` undoes a spy. */
function fn(original?: Fn, restore?: () => void): Mock {
    let implementation: Fn | undefined = original;
    let onces: Fn[] = [];
    let name = 'vi.fn()';
    const mock = function (this: unknown, ...args: unknown[]) {
        const state = mock.mock;
        state.calls.push(args);
        state.lastCall = args;
        // A test's mock as the script sees it (the mock itself answers
        // getOutput & co): what a script reads off a spy never is.
        state.instances.push(scriptView(this));
        state.invocationCallOrder.push(++callOrder);
        const f = onces.length > 0 ? onces.shift() : implementation;
        try {
            const value = f ? (new.target ? Reflect.construct(f, args, new.target) : f.apply(this, args)) : undefined;
            state.results.push({ type: 'return', value });
            return value;
        } catch (e) {
            state.results.push({ type: 'throw', value: e });
            throw e;
        }
    } as unknown as Mock;
    mock.mock = freshState();
    mock._isMockFunction = true;
    mock.getMockName = () => name;
    mock.mockName = (n: string) => ((name = n), mock);
    mock.getMockImplementation = () => implementation;
    mock.mockImplementation = (f: Fn) => ((implementation = f), mock);
    mock.mockImplementationOnce = (f: Fn) => (onces.push(f), mock);
    mock.mockReturnValue = (v: unknown) => mock.mockImplementation(() => v);
    mock.mockReturnValueOnce = (v: unknown) => mock.mockImplementationOnce(() => v);
    mock.mockResolvedValue = (v: unknown) => mock.mockImplementation(() => Promise.resolve(v));
    mock.mockResolvedValueOnce = (v: unknown) => mock.mockImplementationOnce(() => Promise.resolve(v));
    mock.mockRejectedValue = (e: unknown) => mock.mockImplementation(() => Promise.reject(e));
    mock.mockRejectedValueOnce = (e: unknown) => mock.mockImplementationOnce(() => Promise.reject(e));
    mock.mockReturnThis = () =>
        mock.mockImplementation(function (this: unknown) {
            return this;
        });
    mock.mockClear = () => ((mock.mock = freshState()), mock);
    // vitest 2: a reset mock returns undefined; a restored one is what it
    // was made with (a spy's own property again).
    mock.mockReset = () => {
        mock.mockClear();
        implementation = () => undefined;
        onces = [];
        return mock;
    };
    mock.mockRestore = () => {
        mock.mockClear();
        implementation = original;
        onces = [];
        if (restore) restore();
        return mock;
    };
    allMocks.add(mock);
    return mock;
}

function spyOn(obj: any, key: string | symbol, access?: 'get' | 'set'): Mock {
    if (obj === null || (typeof obj !== 'object' && typeof obj !== 'function')) {
        throw new TypeError(`vi.spyOn could not spy on ${String(key)}: the target is ${short(obj)}`);
    }
    if (access) throw new Error('vi.spyOn with a getter or setter is not supported by sluice test');
    // A member of a test's mock (but the test's own getOutput & co) is
    // read and run with the script's view of it: a getter or method a
    // script put on the mock class's prototype never gets the mock itself.
    const view = key === 'getOutput' || key === 'getBatchSaveData' || key === 'getBatchDeleteData' ? obj : scriptView(obj);
    const current = Reflect.get(obj, key, view);
    if (isMockFunction(current)) return current;
    if (typeof current !== 'function') {
        throw new TypeError(`vi.spyOn: ${String(key)} is not a function (it is ${short(current)})`);
    }
    const own = Object.prototype.hasOwnProperty.call(obj, key);
    const run =
        view === obj
            ? current
            : function (this: unknown, ...args: unknown[]) {
                  return Reflect.apply(current, view, args);
              };
    const spy = fn(run, () => {
        if (own) obj[key] = current;
        else delete obj[key];
    });
    // Defined, not assigned: no setter of a prototype runs with the mock.
    if (view === obj) obj[key] = spy;
    else Object.defineProperty(obj, key, { value: spy, writable: true, enumerable: true, configurable: true });
    return spy;
}

// ------ The clock and fake timers (vi.useFakeTimers, vi.setSystemTime,
// vi.advanceTimersByTime…), as vitest 2's defaults: `Date` and the timer
// functions are faked, `performance` and microtasks are not. A faked timer
// runs only when the test advances the clock, at its own instant.

const RealDate = Date;
let frozenAt: number | undefined;

class FrozenDate extends RealDate {
    constructor(...args: any[]) {
        if (args.length === 0 && frozenAt !== undefined) super(frozenAt);
        else super(...(args as []));
    }
    static now(): number {
        return frozenAt ?? RealDate.now();
    }
}

/** Whether a test file is running (not loading, as the component is built). */
let running = false;
/** The clock a test file set at its top level, as its module loaded. */
const loadedClocks = new Map<string, number>();
/** The files whose top level called `vi.useFakeTimers()` (and with what). */
const loadedFakes = new Map<string, FakeConfig | undefined>();

interface FakeConfig {
    now?: number | Date;
    toFake?: string[];
    loopLimit?: number;
}

interface FakeTimer {
    id: number;
    /** When it is due, in ms of the fake clock's own time line. */
    at: number;
    seq: number;
    fn: Fn;
    args: unknown[];
    every?: number;
}

const TIMER_NAMES = ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate'];

interface Fakes {
    /** The fake clock's time line: advanced by the test, never by itself. */
    tick: number;
    timers: Map<number, FakeTimer>;
    nextId: number;
    nextSeq: number;
    loopLimit: number;
    /** The globals replaced, to put back. */
    saved: Map<string, PropertyDescriptor | undefined>;
}

let fakes: Fakes | undefined;

function installFakeTimers(config?: FakeConfig): void {
    const toFake = config?.toFake ?? [...TIMER_NAMES, 'Date'];
    if (toFake.includes('Date')) {
        (globalThis as any).Date = FrozenDate;
        if (config?.now !== undefined) frozenAt = new RealDate(config.now).getTime();
        else if (frozenAt === undefined) frozenAt = RealDate.now();
    } else if (config?.now !== undefined) {
        frozenAt = new RealDate(config.now).getTime();
    }
    if (fakes !== undefined) return;
    // Ids far from the real timers' (which count from 1), as sinon's.
    const f: Fakes = { tick: 0, timers: new Map(), nextId: 1e12, nextSeq: 0, loopLimit: config?.loopLimit ?? 10_000, saved: new Map() };
    const define = (name: string, value: Fn) => {
        if (!toFake.includes(name)) return;
        f.saved.set(name, Object.getOwnPropertyDescriptor(globalThis, name));
        Object.defineProperty(globalThis, name, { configurable: true, writable: true, value });
    };
    // As vitest's (sinon's) fake timers: a delay that is not a positive
    // number is 0 (1 when made by a timer that is running, so a timer
    // that makes another at 0 cannot keep the clock from moving), one
    // past 2^31 - 1 is 1; an interval is at least 1 ms.
    const delayOf = (ms: unknown) => {
        const n = Math.floor(Number(ms));
        if (n > 0x7fffffff) return 1;
        if (n > 0) return n;
        return ticking ? 1 : 0;
    };
    const add = (fn: unknown, delay: number, args: unknown[], every?: number) => {
        if (typeof fn !== 'function') throw new TypeError(`The "callback" argument must be of type function. Received ${typeof fn}`);
        const t: FakeTimer = { id: f.nextId++, at: f.tick + delay, seq: f.nextSeq++, fn: fn as Fn, args, every };
        f.timers.set(t.id, t);
        return t.id;
    };
    const clear = (id: unknown) => void f.timers.delete(typeof id === 'string' ? Number(id) : (id as number));
    define('setTimeout', (fn: unknown, ms?: unknown, ...args: unknown[]) => add(fn, delayOf(ms), args));
    define('setInterval', (fn: unknown, ms?: unknown, ...args: unknown[]) => add(fn, Math.max(1, delayOf(ms)), args, Math.max(1, delayOf(ms))));
    define('setImmediate', (fn: unknown, ...args: unknown[]) => add(fn, delayOf(0), args));
    define('clearTimeout', clear);
    define('clearInterval', clear);
    define('clearImmediate', clear);
    fakes = f;
}

function uninstallFakeTimers(): void {
    if (fakes === undefined) return;
    for (const [name, d] of fakes.saved) {
        if (d === undefined) delete (globalThis as any)[name];
        else Object.defineProperty(globalThis, name, d);
    }
    fakes = undefined;
}

function fakeTimers(what: string): Fakes {
    if (fakes === undefined) throw new Error(`${what}: timers are not mocked. Make sure to call "vi.useFakeTimers()" first.`);
    return fakes;
}

/** The next timer due at or before `until`, in order of (due, made). */
function nextDue(f: Fakes, until: number): FakeTimer | undefined {
    let next: FakeTimer | undefined;
    for (const t of f.timers.values()) {
        if (t.at <= until && (next === undefined || t.at < next.at || (t.at === next.at && t.seq < next.seq))) next = t;
    }
    return next;
}

/** Moves the fake clock to `t`'s instant and runs it (an interval stays, due again). */
/** Whether a fake timer is running (see `delayOf`). */
let ticking = false;

function runTimer(f: Fakes, t: FakeTimer): void {
    if (frozenAt !== undefined) frozenAt += t.at - f.tick;
    f.tick = t.at;
    if (t.every === undefined) f.timers.delete(t.id);
    else {
        t.at += t.every;
        t.seq = f.nextSeq++;
    }
    t.fn(...t.args);
}

function moveTo(f: Fakes, until: number): void {
    if (frozenAt !== undefined) frozenAt += until - f.tick;
    f.tick = until;
}

/** A turn of the real event loop: every pending promise callback runs. */
function realTurn(f: Fakes): Promise<void> {
    const d = f.saved.get('setTimeout');
    const real = (d?.value ?? d?.get?.()) as Fn | undefined;
    if (typeof real !== 'function') return Promise.resolve();
    return new Promise((r) => real(r, 0));
}

// While the clock is being advanced (the async forms' turns between
// timers included), a timer made at 0 ms is due 1 ms on, as sinon's.
function advance(what: string, until: (f: Fakes) => number, limit: boolean): typeof vi {
    const f = fakeTimers(what);
    const end = until(f);
    let ran = 0;
    ticking = true;
    try {
        for (let t = nextDue(f, end); t !== undefined; t = nextDue(f, end)) {
            if (limit && ++ran > f.loopLimit) throw loopError(f);
            runTimer(f, t);
        }
    } finally {
        ticking = false;
    }
    if (end !== Infinity) moveTo(f, end);
    return vi;
}

async function advanceAsync(what: string, until: (f: Fakes) => number, limit: boolean): Promise<typeof vi> {
    const f = fakeTimers(what);
    const end = until(f);
    let ran = 0;
    ticking = true;
    try {
        await realTurn(f);
        for (let t = nextDue(f, end); t !== undefined; t = nextDue(f, end)) {
            if (limit && ++ran > f.loopLimit) throw loopError(f);
            runTimer(f, t);
            await realTurn(f);
            if (fakes !== f) return vi;
        }
    } finally {
        ticking = false;
    }
    if (end !== Infinity) moveTo(f, end);
    return vi;
}

function loopError(f: Fakes): Error {
    return new Error(`Aborting after running ${f.loopLimit} timers, assuming an infinite loop!`);
}

const lastDue = (f: Fakes) => Math.max(f.tick, ...[...f.timers.values()].map((t) => t.at));
const nextAt = (f: Fakes) => nextDue(f, Infinity)?.at ?? f.tick;

function useFakeTimers(config?: FakeConfig): typeof vi {
    // At a file's top level, the fake timers are the file's, installed when
    // it runs: the snapshot's scripts and other tests keep the real ones.
    if (!running && currentKey !== undefined) {
        loadedFakes.set(currentKey, config);
        // (NaN: "now" when the file runs, not when the component was built.)
        if (config?.now !== undefined) loadedClocks.set(currentKey, new RealDate(config.now).getTime());
        else if (!loadedClocks.has(currentKey)) loadedClocks.set(currentKey, NaN);
        return vi;
    }
    installFakeTimers(config);
    return vi;
}

function useRealTimers(): typeof vi {
    uninstallFakeTimers();
    (globalThis as any).Date = RealDate;
    frozenAt = undefined;
    return vi;
}

// ------ vi.mock of the packages sluice stands in for (soap, botbuilder,
// unzipper): their members become the factory's, as the test's scripts
// see them. Project modules cannot be mocked: the bundle has linked them.

type Factory = (importOriginal: () => Promise<unknown>) => unknown;
const moduleMocks = new Map<string, { spec: unknown; factory?: Factory }[]>();

function mockModule(spec: unknown, factory?: Factory): void {
    if (running || currentKey === undefined) throw new Error('vi.mock must be called at the top level of a test file');
    const list = moduleMocks.get(currentKey) ?? [];
    list.push({ spec, factory });
    moduleMocks.set(currentKey, list);
}

function stubs(): Map<string, any> {
    return ((globalThis as any).__sluiceStubs as Map<string, any> | undefined) ?? new Map();
}

async function applyModuleMocks(key: string): Promise<void> {
    for (const { spec, factory } of moduleMocks.get(key) ?? []) {
        let stub: any;
        let name = String(spec);
        if (spec && typeof (spec as any).then === 'function') {
            const ns: any = await (spec as Promise<unknown>);
            stub = [...stubs().values()].find((s) => s === ns?.default || s === ns);
            name = 'a module';
        } else {
            stub = stubs().get(String(spec));
        }
        if (!stub) {
            throw new Error(`vi.mock of ${name} is not supported by sluice test: only packages sluice stands in for (${[...stubs().keys()].join(', ') || 'none in this bundle'}) can be mocked`);
        }
        if (!factory) throw new Error(`vi.mock(${name}) without a factory (automocking) is not supported by sluice test`);
        const mocked: any = await factory(async () => ({ default: stub }));
        if (mocked === null || typeof mocked !== 'object') throw new Error(`the vi.mock factory of ${name} returned ${short(mocked)}, not a module object`);
        for (const k of Object.keys(mocked)) if (k !== 'default') stub[k] = mocked[k];
        const d = mocked.default;
        if (d && d !== stub && (typeof d === 'object' || typeof d === 'function')) {
            for (const k of Object.keys(d)) stub[k] = d[k];
        }
    }
}

function unsupported(what: string): () => never {
    return () => {
        throw new Error(`${what} is not supported by sluice test`);
    };
}

export const vi = {
    fn: (impl?: Fn) => fn(impl),
    spyOn,
    isMockFunction,
    mocked: <T>(x: T) => x,
    clearAllMocks: () => {
        for (const m of allMocks) m.mockClear();
        return vi;
    },
    resetAllMocks: () => {
        for (const m of allMocks) m.mockReset();
        return vi;
    },
    restoreAllMocks: () => {
        for (const m of allMocks) m.mockRestore();
        return vi;
    },
    useFakeTimers,
    useRealTimers,
    setSystemTime: (t: string | number | Date) => {
        if (!running && currentKey !== undefined) {
            loadedClocks.set(currentKey, new RealDate(t as any).getTime());
            return vi;
        }
        // The timers stay due when they were, in the fake clock's own time.
        frozenAt = new RealDate(t as any).getTime();
        (globalThis as any).Date = FrozenDate;
        return vi;
    },
    getRealSystemTime: () => RealDate.now(),
    getMockedSystemTime: () => (frozenAt === undefined ? null : new RealDate(frozenAt)),
    isFakeTimers: () => fakes !== undefined,
    advanceTimersByTime: (ms: number) => advance('vi.advanceTimersByTime', (f) => f.tick + Math.max(0, Number(ms) || 0), false),
    advanceTimersByTimeAsync: (ms: number) =>
        advanceAsync('vi.advanceTimersByTimeAsync', (f) => f.tick + Math.max(0, Number(ms) || 0), false),
    advanceTimersToNextTimer: (steps = 1) => {
        for (let i = 0; i < steps; i++) advance('vi.advanceTimersToNextTimer', nextAt, false);
        return vi;
    },
    advanceTimersToNextTimerAsync: async (steps = 1) => {
        for (let i = 0; i < steps; i++) await advanceAsync('vi.advanceTimersToNextTimerAsync', nextAt, false);
        return vi;
    },
    runAllTimers: () => advance('vi.runAllTimers', () => Infinity, true),
    runAllTimersAsync: () => advanceAsync('vi.runAllTimersAsync', () => Infinity, true),
    runOnlyPendingTimers: () => advance('vi.runOnlyPendingTimers', lastDue, false),
    runOnlyPendingTimersAsync: () => advanceAsync('vi.runOnlyPendingTimersAsync', lastDue, false),
    getTimerCount: () => fakeTimers('vi.getTimerCount').timers.size,
    clearAllTimers: () => {
        fakes?.timers.clear();
        return vi;
    },
    hoisted: <T>(factory: () => T) => factory(),
    mock: mockModule,
    doMock: mockModule,
    stubGlobal: unsupported('vi.stubGlobal')
};

// ------ expect

export class AssertionError extends Error {
    constructor(message: string) {
        super(message);
        this.name = 'AssertionError';
    }
}

let assertionsMade = 0;
let assertionsWanted: number | undefined;

abstract class Asymmetric {
    abstract asymmetricMatch(other: unknown): boolean;
    abstract toString(): string;
    toJSON(): string {
        return this.toString();
    }
}

class ObjectContaining extends Asymmetric {
    constructor(private sample: Record<string, unknown>) {
        super();
    }
    asymmetricMatch(other: any): boolean {
        if (other === null || typeof other !== 'object') return false;
        return Object.keys(this.sample).every((k) => k in other && equals(other[k], this.sample[k]));
    }
    toString(): string {
        return `ObjectContaining ${short(this.sample)}`;
    }
}

class ArrayContaining extends Asymmetric {
    constructor(private sample: unknown[]) {
        super();
    }
    asymmetricMatch(other: unknown): boolean {
        return Array.isArray(other) && this.sample.every((s) => other.some((o) => equals(o, s)));
    }
    toString(): string {
        return `ArrayContaining ${short(this.sample)}`;
    }
}

class StringMatching extends Asymmetric {
    constructor(private pattern: string | RegExp, private contains: boolean) {
        super();
    }
    asymmetricMatch(other: unknown): boolean {
        if (typeof other !== 'string') return false;
        return this.contains ? other.includes(String(this.pattern)) : new RegExp(this.pattern).test(other);
    }
    toString(): string {
        return `${this.contains ? 'StringContaining' : 'StringMatching'} ${String(this.pattern)}`;
    }
}

class Any extends Asymmetric {
    constructor(private of: any) {
        super();
    }
    asymmetricMatch(other: unknown): boolean {
        const t = this.of;
        if (t === String) return typeof other === 'string' || other instanceof String;
        if (t === Number) return typeof other === 'number' || other instanceof Number;
        if (t === Boolean) return typeof other === 'boolean' || other instanceof Boolean;
        if (t === Function) return typeof other === 'function';
        if (t === BigInt) return typeof other === 'bigint';
        if (t === Symbol) return typeof other === 'symbol';
        if (t === Object) return typeof other === 'object' && other !== null;
        return other instanceof t;
    }
    toString(): string {
        return `Any<${this.of?.name ?? '?'}>`;
    }
}

class Anything extends Asymmetric {
    asymmetricMatch(other: unknown): boolean {
        return other !== null && other !== undefined;
    }
    toString(): string {
        return 'Anything';
    }
}

/** `toMatchObject`: every property `expected` has, matching recursively. */
function matchesObject(actual: any, expected: any): boolean {
    if (expected && typeof expected.asymmetricMatch === 'function') return expected.asymmetricMatch(actual);
    if (Array.isArray(expected)) {
        return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => matchesObject(actual[i], e));
    }
    if (expected !== null && typeof expected === 'object' && !(expected instanceof Date) && !(expected instanceof RegExp)) {
        if (actual === null || typeof actual !== 'object') return false;
        return Object.keys(expected).every((k) => k in actual && matchesObject(actual[k], expected[k]));
    }
    return equals(actual, expected);
}

function thrownMatches(thrown: any, expected: any): boolean {
    if (expected === undefined) return true;
    const message = thrown && typeof thrown === 'object' && 'message' in thrown ? String(thrown.message) : String(thrown);
    if (typeof expected === 'string') return message.includes(expected);
    if (expected instanceof RegExp) return expected.test(message);
    if (typeof expected === 'function') return thrown instanceof expected;
    if (expected && typeof expected.asymmetricMatch === 'function') return expected.asymmetricMatch(thrown);
    if (expected instanceof Error) return message === expected.message;
    if (expected !== null && typeof expected === 'object') return matchesObject(thrown, expected);
    return false;
}

function mockOf(actual: unknown, matcher: string): Mock {
    if (!isMockFunction(actual)) throw new AssertionError(`${matcher}: ${short(actual)} is not a spy or a mock function`);
    return actual;
}

function argsEqual(call: unknown[], args: unknown[]): boolean {
    return equals(call, args);
}

type Check = (actual: any, ...args: any[]) => { pass: boolean; message: string };

const MATCHERS: Record<string, Check> = {
    toBe: (a, e) => ({ pass: Object.is(a, e), message: `expected ${short(a)} to be ${short(e)}` }),
    toEqual: (a, e) => ({ pass: equals(a, e), message: `values differ: ${difference(e, a, 'value')}` }),
    toStrictEqual: (a, e) => ({ pass: equals(a, e, true), message: `values differ: ${difference(e, a, 'value')}` }),
    toMatchObject: (a, e) => ({ pass: matchesObject(a, e), message: `expected ${short(a)} to match ${short(e)}` }),
    toHaveLength: (a, n) => ({ pass: a != null && a.length === n, message: `expected length ${n}, got ${a == null ? short(a) : a.length}` }),
    toContain: (a, x) => ({
        pass: typeof a === 'string' ? a.includes(x) : a != null && typeof a[Symbol.iterator] === 'function' && [...a].includes(x),
        message: `expected ${short(a)} to contain ${short(x)}`
    }),
    toContainEqual: (a, x) => ({
        pass: a != null && typeof a[Symbol.iterator] === 'function' && [...a].some((v) => equals(v, x)),
        message: `expected ${short(a)} to contain an item equal to ${short(x)}`
    }),
    toBeDefined: (a) => ({ pass: a !== undefined, message: `expected ${short(a)} to be defined` }),
    toBeUndefined: (a) => ({ pass: a === undefined, message: `expected ${short(a)} to be undefined` }),
    toBeNull: (a) => ({ pass: a === null, message: `expected ${short(a)} to be null` }),
    toBeTruthy: (a) => ({ pass: !!a, message: `expected ${short(a)} to be truthy` }),
    toBeFalsy: (a) => ({ pass: !a, message: `expected ${short(a)} to be falsy` }),
    toBeNaN: (a) => ({ pass: Number.isNaN(a), message: `expected ${short(a)} to be NaN` }),
    toBeTypeOf: (a, t) => ({ pass: typeof a === t, message: `expected ${short(a)} to be of type ${t}` }),
    toBeInstanceOf: (a, c) => ({ pass: a instanceof c, message: `expected ${short(a)} to be an instance of ${c?.name}` }),
    toBeGreaterThan: (a, n) => ({ pass: a > n, message: `expected ${short(a)} to be greater than ${short(n)}` }),
    toBeGreaterThanOrEqual: (a, n) => ({ pass: a >= n, message: `expected ${short(a)} to be greater than or equal to ${short(n)}` }),
    toBeLessThan: (a, n) => ({ pass: a < n, message: `expected ${short(a)} to be less than ${short(n)}` }),
    toBeLessThanOrEqual: (a, n) => ({ pass: a <= n, message: `expected ${short(a)} to be less than or equal to ${short(n)}` }),
    toMatch: (a, p) => ({
        pass: typeof a === 'string' && (typeof p === 'string' ? a.includes(p) : p.test(a)),
        message: `expected ${short(a)} to match ${String(p)}`
    }),
    toHaveProperty: (a, path, ...value) => {
        const keys = Array.isArray(path) ? path : String(path).split('.');
        let at: any = a;
        for (const k of keys) {
            if (at === null || at === undefined || !(k in Object(at))) {
                return { pass: false, message: `expected ${short(a)} to have property ${String(path)}` };
            }
            at = at[k];
        }
        const pass = value.length === 0 || equals(at, value[0]);
        return { pass, message: `expected property ${String(path)} of ${short(a)} to equal ${short(value[0])}` };
    },
    toThrow: (a, e) => ({ pass: a.threw && thrownMatches(a.error, e), message: a.threw ? `expected the error ${short(a.error?.message ?? a.error)} to match ${short(e)}` : 'expected a throw, nothing was thrown' }),
    toHaveBeenCalled: (a) => {
        const m = mockOf(a, 'toHaveBeenCalled');
        return { pass: m.mock.calls.length > 0, message: `expected ${m.getMockName()} to have been called (${m.mock.calls.length} calls)` };
    },
    toHaveBeenCalledOnce: (a) => {
        const m = mockOf(a, 'toHaveBeenCalledOnce');
        return { pass: m.mock.calls.length === 1, message: `expected ${m.getMockName()} to have been called once, it was called ${m.mock.calls.length} times` };
    },
    toHaveBeenCalledTimes: (a, n) => {
        const m = mockOf(a, 'toHaveBeenCalledTimes');
        return { pass: m.mock.calls.length === n, message: `expected ${m.getMockName()} to have been called ${n} times, it was called ${m.mock.calls.length} times` };
    },
    toHaveBeenCalledWith: (a, ...args) => {
        const m = mockOf(a, 'toHaveBeenCalledWith');
        return {
            pass: m.mock.calls.some((c) => argsEqual(c, args)),
            message: `expected a call with ${short(args)}; calls: ${short(m.mock.calls)}`
        };
    },
    toHaveBeenLastCalledWith: (a, ...args) => {
        const m = mockOf(a, 'toHaveBeenLastCalledWith');
        const last = m.mock.calls[m.mock.calls.length - 1];
        return { pass: last !== undefined && argsEqual(last, args), message: `expected the last call to be with ${short(args)}, it was ${short(last)}` };
    },
    toHaveBeenNthCalledWith: (a, n, ...args) => {
        const m = mockOf(a, 'toHaveBeenNthCalledWith');
        const call = m.mock.calls[n - 1];
        return { pass: call !== undefined && argsEqual(call, args), message: `expected call ${n} to be with ${short(args)}, it was ${short(call)}` };
    },
    toHaveReturned: (a) => {
        const m = mockOf(a, 'toHaveReturned');
        return { pass: m.mock.results.some((r) => r.type === 'return'), message: `expected ${m.getMockName()} to have returned` };
    },
    toHaveReturnedWith: (a, v) => {
        const m = mockOf(a, 'toHaveReturnedWith');
        return { pass: m.mock.results.some((r) => r.type === 'return' && equals(r.value, v)), message: `expected ${m.getMockName()} to have returned ${short(v)}` };
    }
};
const ALIASES: Record<string, string> = {
    toThrowError: 'toThrow',
    toBeCalled: 'toHaveBeenCalled',
    toBeCalledTimes: 'toHaveBeenCalledTimes',
    toBeCalledWith: 'toHaveBeenCalledWith',
    lastCalledWith: 'toHaveBeenLastCalledWith',
    toReturn: 'toHaveReturned',
    toReturnWith: 'toHaveReturnedWith'
};

type Mode = 'value' | 'resolves' | 'rejects';

function assertion(actual: unknown, negated: boolean, mode: Mode, label?: string): any {
    const run = (name: string, check: Check, args: unknown[], subject: unknown) => {
        assertionsMade++;
        let value = subject;
        if (name === 'toThrow' && mode === 'value') {
            if (typeof subject !== 'function') throw new AssertionError(`toThrow: ${short(subject)} is not a function`);
            try {
                (subject as Fn)();
                value = { threw: false };
            } catch (error) {
                value = { threw: true, error };
            }
        } else if (name === 'toThrow') {
            value = { threw: mode === 'rejects', error: subject };
        }
        const { pass, message } = check(value, ...args);
        if (pass === negated) {
            const prefix = label ? `${label}: ` : '';
            throw new AssertionError(prefix + (negated ? `not: ${message}` : message));
        }
    };
    return new Proxy(
        {},
        {
            get(_t, prop) {
                if (prop === 'not') return assertion(actual, !negated, mode, label);
                if (prop === 'resolves' || prop === 'rejects') return assertion(actual, negated, prop, label);
                if (typeof prop !== 'string') return undefined;
                const name = ALIASES[prop] ?? prop;
                const check = MATCHERS[name];
                if (!check) {
                    return () => {
                        throw new Error(`expect(…).${prop} is not supported by sluice test`);
                    };
                }
                return (...args: unknown[]) => {
                    if (mode === 'value') return run(name, check, args, actual);
                    // vitest calls a function given to resolves/rejects.
                    let subject: unknown;
                    try {
                        subject = typeof actual === 'function' ? (actual as Fn)() : actual;
                    } catch (e) {
                        subject = Promise.reject(e);
                    }
                    if (!subject || typeof (subject as any).then !== 'function') {
                        throw new TypeError(`${prop} needs a promise (or a function returning one), it was given ${short(subject)}`);
                    }
                    return (subject as Promise<unknown>).then(
                        (v) => {
                            if (mode === 'rejects') {
                                assertionsMade++;
                                throw new AssertionError(`expected the promise to reject, it resolved to ${short(v)}`);
                            }
                            run(name, check, args, v);
                        },
                        (e) => {
                            if (mode === 'resolves') {
                                assertionsMade++;
                                throw new AssertionError(`expected the promise to resolve, it rejected with ${short(e?.message ?? e)}`);
                            }
                            run(name, check, args, e);
                        }
                    );
                };
            }
        }
    );
}

export const expect: any = (actual: unknown, label?: string) => assertion(actual, false, 'value', label);
expect.objectContaining = (o: Record<string, unknown>) => new ObjectContaining(o);
expect.arrayContaining = (a: unknown[]) => new ArrayContaining(a);
expect.stringContaining = (s: string) => new StringMatching(s, true);
expect.stringMatching = (p: string | RegExp) => new StringMatching(p, false);
expect.any = (c: unknown) => new Any(c);
expect.anything = () => new Anything();
expect.fail = (message?: string) => {
    throw new AssertionError(message ?? 'expect.fail()');
};
expect.assertions = (n: number) => {
    assertionsWanted = n;
};
expect.hasAssertions = () => {
    assertionsWanted = -1;
};

// ------ describe / it and the hooks

interface Test {
    kind: 'test';
    name: string;
    fn?: Fn;
    skip: boolean;
    only?: boolean;
    /** vitest's `retry` and `repeats` options. */
    retry?: number;
    repeats?: number;
}

interface Suite {
    kind: 'suite';
    name: string;
    body?: Fn;
    skip: boolean;
    only?: boolean;
    items: (Suite | Test)[];
    beforeAll: Fn[];
    afterAll: Fn[];
    beforeEach: Fn[];
    afterEach: Fn[];
}

function newSuite(name: string, body?: Fn, skip = false): Suite {
    return { kind: 'suite', name, body, skip, items: [], beforeAll: [], afterAll: [], beforeEach: [], afterEach: [] };
}

const files = new Map<string, Suite>();
let current: Suite | undefined;
let currentKey: string | undefined;

/** The test file whose module loads next (the entry calls this before importing it). */
export function vitestFile(key: string): void {
    current = newSuite(key);
    currentKey = key;
    files.set(key, current);
}

function here(what: string): Suite {
    if (!current) throw new Error(`${what} was called outside a test file`);
    return current;
}

/** vitest's test options (the second argument, or the third's number). */
interface Options {
    skip?: boolean;
    todo?: boolean;
    only?: boolean;
    fails?: boolean;
    retry?: number;
    repeats?: number;
}

/** The options of `(name, options, fn)` or `(name, fn, options)`. */
function optionsOf(a: unknown, b?: unknown): Options {
    if (a !== null && typeof a === 'object') return a as Options;
    return b !== null && typeof b === 'object' ? (b as Options) : {};
}

function addTest(name: string, f: Fn | undefined, skip: boolean, only = false, options: Options = {}): void {
    const fn = options.fails ? failing(f) : f;
    here('it').items.push({
        kind: 'test',
        name: String(name),
        fn,
        skip: skip || !!options.skip || !!options.todo || fn === undefined,
        only: only || !!options.only,
        retry: options.retry,
        repeats: options.repeats
    });
}

function addSuite(name: string, body: Fn | undefined, skip: boolean, only = false, options: Options = {}): void {
    const s = newSuite(String(name), body, skip || !!options.skip || !!options.todo);
    s.only = only || !!options.only;
    here('describe').items.push(s);
}

/** vitest's `(name, fn)`, `(name, options, fn)` and `(name, fn, timeout)`. */
function handlerOf(a: unknown, b: unknown): Fn | undefined {
    if (typeof a === 'function') return a as Fn;
    if (typeof b === 'function') return b as Fn;
    return undefined;
}

function nameOf(name: unknown): string {
    return typeof name === 'string' ? name : typeof name === 'function' ? name.name || '<anonymous>' : String(name);
}

// ------ Parameterised tests (.each, .for) and their titles, as vitest 2
// formats them: `%#`/`%$` the case's index (from 0 / from 1), printf's
// `%s %d %i %f %j %o %O %c %%` the case's values in turn, and `$key` (or
// `$a.b`, `$0`) a value of an object case.

const QUOTE = /^[A-Za-z_$][\w$]*$/;

/** Roughly what vitest's (loupe's) inspect prints. */
function inspect(v: unknown, depth = 2, seen: unknown[] = []): string {
    if (typeof v === 'string') return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
    if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'function') return `[Function ${v.name || '<anonymous>'}]`;
    if (typeof v === 'symbol') return v.toString();
    if (v === null || typeof v !== 'object') return String(v);
    if (seen.includes(v)) return '[Circular]';
    if (v instanceof RealDate) return Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString();
    if (v instanceof RegExp) return String(v);
    if (v instanceof Error) return `${v.name}: ${v.message}`;
    const inner = [...seen, v];
    if (Array.isArray(v)) {
        if (v.length === 0) return '[]';
        if (depth < 0) return '[Array]';
        return `[ ${v.map((x) => inspect(x, depth - 1, inner)).join(', ')} ]`;
    }
    const keys = Object.keys(v);
    if (keys.length === 0) return '{}';
    if (depth < 0) return '[Object]';
    const entries = keys.map((k) => `${QUOTE.test(k) ? k : inspect(k)}: ${inspect((v as any)[k], depth - 1, inner)}`);
    return `{ ${entries.join(', ')} }`;
}

/** vitest's `objDisplay` with its default truncation at 40 characters. */
function display(v: unknown): string {
    const text = inspect(v);
    if (text.length < 40) return text;
    if (Array.isArray(v)) return `[ Array(${v.length}) ]`;
    if (v !== null && typeof v === 'object') {
        const keys = Object.keys(v);
        return keys.length > 2 ? `{ Object (${keys.slice(0, 2).join(', ')}, ...) }` : `{ Object (${keys.join(', ')}) }`;
    }
    if (typeof v === 'string') return `${text.slice(0, 39)}…`;
    return text;
}

/** Node's `util.format` as vitest has it. */
function format(template: string, values: unknown[]): string {
    let i = 0;
    let out = template.replace(/%[sdjifoOc%]/g, (x) => {
        if (x === '%%') return '%';
        if (i >= values.length) return x;
        const v = values[i++];
        switch (x) {
            case '%s':
                if (typeof v === 'bigint') return `${v}n`;
                if (typeof v === 'number' && Object.is(v, -0)) return '-0';
                if (typeof v === 'object' && v !== null) return inspect(v, 0);
                return String(v);
            case '%d':
                return typeof v === 'bigint' ? `${v}n` : Number(v).toString();
            case '%i':
                return typeof v === 'bigint' ? `${v}n` : Number.parseInt(String(v)).toString();
            case '%f':
                return Number.parseFloat(String(v)).toString();
            case '%j':
                try {
                    return String(JSON.stringify(v));
                } catch {
                    return '[Circular]';
                }
            case '%o':
            case '%O':
                return inspect(v);
            case '%c':
                return '';
            default:
                return x;
        }
    });
    for (; i < values.length; i++) {
        const v = values[i];
        out += ` ${v === null || typeof v !== 'object' ? String(v) : inspect(v)}`;
    }
    return out;
}

function attr(source: unknown, path: string): unknown {
    let cur: any = source;
    for (const part of path.split('.')) {
        if (cur === null || cur === undefined) return undefined;
        cur = cur[part];
    }
    return cur;
}

function title(template: string, items: unknown[], index: number): string {
    let t = template;
    if (t.includes('%#') || t.includes('%$')) {
        t = t
            .replace(/%%/g, '\u0000')
            .replace(/%#/g, String(index))
            .replace(/%\$/g, String(index + 1))
            .replace(/\u0000/g, '%%');
    }
    const count = t.split('%').length - 1;
    let out = format(t, items.slice(0, count));
    const first = items[0];
    const objectCase = first !== null && typeof first === 'object' && !Array.isArray(first);
    out = out.replace(/\$([$\w.]+)/g, (whole, key: string) => {
        const arrayKey = /^\d+$/.test(key);
        if (!objectCase && !arrayKey) return whole;
        const fromArray = arrayKey ? attr(items, key) : undefined;
        const value = objectCase ? (attr(first, key) ?? fromArray) : fromArray;
        return display(value);
    });
    return out;
}

/** The cases of a tagged template table (`it.each\`a | b ${1} | ${2}\``). */
function tableCases(strings: readonly string[], values: unknown[]): Record<string, unknown>[] {
    const header = strings.join('').trim().replace(/ /g, '').split('\n').map((l) => l.split('|'))[0];
    const cases: Record<string, unknown>[] = [];
    for (let i = 0; i < Math.floor(values.length / header.length); i++) {
        const c: Record<string, unknown> = {};
        header.forEach((h, j) => (c[h] = values[i * header.length + j]));
        cases.push(c);
    }
    return cases;
}

type Register = (name: string, body: Fn | undefined, options: Options) => void;

/**
 * `.each` (array cases spread into the function when every case is an
 * array) and `.for` (each case as it is). A malformed table is a failing
 * test, not a throw: the file's module loads as the component is built.
 */
function parameterised(what: string, register: Register, spread: boolean) {
    return (cases: unknown, ...values: unknown[]) => {
        const table =
            Array.isArray(cases) && values.length > 0 && Array.isArray((cases as any).raw)
                ? tableCases(cases as string[], values)
                : cases;
        return (name: unknown, a?: unknown, b?: unknown) => {
            const template = nameOf(name);
            if (!Array.isArray(table)) {
                addTest(`${template} (${what})`, () => {
                    throw new TypeError(`${what} expects an array of cases or a template table, got ${short(table)}`);
                }, false);
                return;
            }
            const handler = handlerOf(a, b);
            const options = optionsOf(a, b);
            const arrays = spread && table.every((c) => Array.isArray(c));
            table.forEach((c, i) => {
                const items = Array.isArray(c) ? c : [c];
                // `.for` hands the test its context, as the second argument.
                const body =
                    handler &&
                    (!spread ? (ctx: unknown) => handler(c, ctx) : arrays ? () => handler(...items) : () => handler(c));
                register(title(template, items, i), body, options);
            });
        };
    };
}

function testApi(skip: boolean, only: boolean): any {
    const t: any = (name: unknown, a?: unknown, b?: unknown) => addTest(nameOf(name), handlerOf(a, b), skip, only, optionsOf(a, b));
    const register = (name: string, body: Fn | undefined, options: Options) => addTest(name, body, skip, only, options);
    t.each = parameterised(`${only ? 'it.only' : skip ? 'it.skip' : 'it'}.each`, register, true);
    t.for = parameterised(`${only ? 'it.only' : skip ? 'it.skip' : 'it'}.for`, register, false);
    return t;
}

function suiteApi(skip: boolean, only: boolean): any {
    const d: any = (name: unknown, a?: unknown, b?: unknown) => addSuite(nameOf(name), handlerOf(a, b), skip, only, optionsOf(a, b));
    const register = (name: string, body: Fn | undefined, options: Options) => addSuite(name, body, skip, only, options);
    d.each = parameterised(`${only ? 'describe.only' : skip ? 'describe.skip' : 'describe'}.each`, register, true);
    d.for = parameterised(`${only ? 'describe.only' : skip ? 'describe.skip' : 'describe'}.for`, register, false);
    return d;
}

/** A test that passes when its body fails (`it.fails`). */
function failing(f: Fn | undefined): Fn | undefined {
    if (!f) return f;
    return async (...args: unknown[]) => {
        try {
            await f(...args);
        } catch {
            return;
        }
        throw new AssertionError('expect test to fail');
    };
}

export const it: any = testApi(false, false);
it.skip = testApi(true, false);
it.only = testApi(false, true);
it.todo = (name: unknown) => addTest(nameOf(name), undefined, true);
it.skipIf = (cond: unknown) => (cond ? it.skip : it);
it.runIf = (cond: unknown) => (cond ? it : it.skip);
it.fails = (name: unknown, a?: unknown, b?: unknown) => addTest(nameOf(name), handlerOf(a, b), false, false, { ...optionsOf(a, b), fails: true });
// Tests of a file run one at a time here: `concurrent` is `sequential`.
it.concurrent = it;
it.sequential = it;
export const test = it;

export const describe: any = suiteApi(false, false);
describe.skip = suiteApi(true, false);
describe.only = suiteApi(false, true);
describe.todo = (name: unknown) => addSuite(nameOf(name), undefined, true);
describe.skipIf = (cond: unknown) => (cond ? describe.skip : describe);
describe.runIf = (cond: unknown) => (cond ? describe : describe.skip);
describe.concurrent = describe;
describe.sequential = describe;
export const suite = describe;

export const beforeAll = (f: Fn) => void here('beforeAll').beforeAll.push(f);
export const afterAll = (f: Fn) => void here('afterAll').afterAll.push(f);
export const beforeEach = (f: Fn) => void here('beforeEach').beforeEach.push(f);
export const afterEach = (f: Fn) => void here('afterEach').afterEach.push(f);

/** Runs the `describe` bodies (vitest's collection), depth first. */
function collect(s: Suite): void {
    for (const item of s.items) {
        if (item.kind !== 'suite' || !item.body) continue;
        const body = item.body;
        item.body = undefined;
        const outer = current;
        current = item;
        try {
            body();
        } finally {
            current = outer;
        }
        collect(item);
    }
}

export interface FileResult {
    name: string;
    ok: boolean;
    message?: string;
}

function describeError(e: unknown): string {
    if (e instanceof Error) return `${e.name}: ${e.message}`;
    return short(e);
}

async function runSuite(s: Suite, path: string[], outer: Suite[], results: FileResult[]): Promise<void> {
    const chain = [...outer, s];
    const tests = (x: Suite): Test[] => x.items.flatMap((i) => (i.kind === 'test' ? [i] : i.skip ? [] : tests(i)));
    const failAll = (why: string) => {
        for (const t of tests(s)) if (!t.skip) results.push({ name: [...path, t.name].join(' > '), ok: false, message: why });
    };
    const cleanups: Fn[] = [];
    try {
        for (const h of s.beforeAll) {
            const cleanup = await h();
            if (typeof cleanup === 'function') cleanups.unshift(cleanup);
        }
    } catch (e) {
        failAll(`beforeAll: ${describeError(e)}`);
        return;
    }
    for (const item of s.items) {
        if (item.kind === 'suite') {
            if (!item.skip) await runSuite(item, [...path, item.name], chain, results);
            continue;
        }
        if (item.skip || !item.fn) continue;
        const name = [...path, item.name].join(' > ');
        // `retry`: tried again while it fails; `repeats`: run again after
        // it passes, every run to pass.
        let failure: string | undefined;
        const runs = 1 + Math.max(0, Math.floor(Number(item.repeats) || 0));
        const retries = Math.max(0, Math.floor(Number(item.retry) || 0));
        for (let run = 0; run < runs && failure === undefined; run++) {
            for (let attempt = 0; attempt <= retries; attempt++) {
                failure = await runTest(item, chain);
                if (failure === undefined) break;
            }
        }
        results.push(failure === undefined ? { name, ok: true } : { name, ok: false, message: failure });
    }
    try {
        for (const h of [...s.afterAll].reverse()) await h();
        for (const h of cleanups) await h();
    } catch (e) {
        results.push({ name: [...path, 'afterAll'].join(' > '), ok: false, message: describeError(e) });
    }
}

/** The test context vitest gives a test function (the part tests use),
 * with the callbacks it registers. */
function context(item: Test, finished: Fn[], failed: Fn[]): Record<string, unknown> {
    return {
        expect,
        task: { name: item.name },
        skip: () => {
            throw new SkipTest();
        },
        onTestFailed: (f: Fn) => void failed.push(f),
        onTestFinished: (f: Fn) => void finished.push(f)
    };
}

class SkipTest extends Error {}

/** One run of `item` with its hooks; its failure, if any. */
async function runTest(item: Test, chain: Suite[]): Promise<string | undefined> {
    assertionsMade = 0;
    assertionsWanted = undefined;
    let failure: string | undefined;
    const cleanups: Fn[] = [];
    const finished: Fn[] = [];
    const failed: Fn[] = [];
    try {
        for (const x of chain) {
            for (const h of x.beforeEach) {
                const cleanup = await h();
                if (typeof cleanup === 'function') cleanups.unshift(cleanup);
            }
        }
        await (item.fn as Fn)(context(item, finished, failed));
        if (assertionsWanted === -1 && assertionsMade === 0) failure = 'AssertionError: expected at least one assertion (expect.hasAssertions)';
        else if (assertionsWanted !== undefined && assertionsWanted >= 0 && assertionsMade !== assertionsWanted) {
            failure = `AssertionError: expected ${assertionsWanted} assertions, ${assertionsMade} were made`;
        }
    } catch (e) {
        if (!(e instanceof SkipTest)) failure = describeError(e);
    }
    // vitest runs these before the after-hooks, the last first.
    if (failure !== undefined) {
        for (const h of [...failed].reverse()) {
            try {
                await h();
            } catch (e) {
                failure ??= `onTestFailed: ${describeError(e)}`;
            }
        }
    }
    for (const h of [...finished].reverse()) {
        try {
            await h();
        } catch (e) {
            failure ??= `onTestFinished: ${describeError(e)}`;
        }
    }
    // vitest 2 runs after-hooks as a stack: the last registered first.
    for (const x of [...chain].reverse()) {
        for (const h of [...x.afterEach].reverse()) {
            try {
                await h();
            } catch (e) {
                failure ??= `afterEach: ${describeError(e)}`;
            }
        }
    }
    for (const h of cleanups) {
        try {
            await h();
        } catch (e) {
            failure ??= `beforeEach cleanup: ${describeError(e)}`;
        }
    }
    return failure;
}

function hasOnly(s: Suite): boolean {
    return s.items.some((i) => i.only === true || (i.kind === 'suite' && hasOnly(i)));
}

/** Skips what `.only` leaves out (everything in an `only` suite stays). */
function keepOnly(s: Suite, inOnly: boolean): void {
    for (const i of s.items) {
        const kept = inOnly || i.only === true;
        if (i.kind === 'test') {
            if (!kept) i.skip = true;
        } else if (kept || hasOnly(i)) {
            keepOnly(i, kept && !hasOnly(i));
        } else {
            i.skip = true;
        }
    }
}

/** Whether the test file `key` was bundled into this component. */
export function hasFile(key: string): boolean {
    return files.has(key);
}

/** Runs test file `key`: collection, then every test in order. */
export async function runFile(key: string): Promise<FileResult[]> {
    const root = files.get(key);
    if (!root) return [{ name: 'load', ok: false, message: `the test file ${key} is not in this component` }];
    const results: FileResult[] = [];
    running = true;
    // What vitest does before the describe bodies run: the file's top-level
    // clock, and its (hoisted) module mocks.
    const clock = loadedClocks.get(key);
    if (loadedFakes.has(key)) installFakeTimers({ ...loadedFakes.get(key), now: undefined });
    if (clock !== undefined) vi.setSystemTime(Number.isNaN(clock) ? RealDate.now() : clock);
    try {
        await applyModuleMocks(key);
    } catch (e) {
        useRealTimers();
        return [{ name: 'vi.mock', ok: false, message: describeError(e) }];
    }
    try {
        collect(root);
    } catch (e) {
        useRealTimers();
        return [{ name: 'collect', ok: false, message: describeError(e) }];
    }
    // `.only` anywhere: the rest of the file is skipped, as in vitest.
    if (hasOnly(root)) keepOnly(root, false);
    try {
        await runSuite(root, [], [], results);
    } finally {
        useRealTimers();
    }
    if (results.length === 0) results.push({ name: 'collect', ok: false, message: 'no test found in the file' });
    return results;
}
