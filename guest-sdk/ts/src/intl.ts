// Collation, Unicode normalization and en-US dates as Node.js does them.
// The engine is built without ICU: its `localeCompare` compares UTF-16
// code units, it has no `String.prototype.normalize` and no `Intl`. These
// come from the host (nango:scripts/intl, ICU4X with CLDR's data, and the
// IANA time zones): `localeCompare`, `Intl.Collator` and `normalize`
// answer as Node's do in every locale, `Intl.DateTimeFormat` and
// `Date.prototype.toLocale*String` in `en-US` (./intl-date.ts), and
// `Intl.NumberFormat` and `Number.prototype.toLocaleString` too
// (./intl-number.ts). The rest of `Intl` (plurals, lists, …) is not
// there: those constructors are undefined, as feature tests expect of an
// engine without them.

import * as intl from 'nango:scripts/intl@0.2.0';
import { getOption, hostMessage } from './intl-options';
import { englishLocale, formatToParts, resolveOptions, resolvedOptionsOf, type Defaults, type English } from './intl-date';
import { formatNumberToParts, numberResolvedOptions, Refused, resolveNumberOptions, type NumberOptions } from './intl-number';

const UTF8_OUT = new TextEncoder();
const UTF8_IN = new TextDecoder();

type Sensitivity = 'base' | 'accent' | 'case' | 'variant';
type CaseFirst = 'upper' | 'lower' | 'false';

/** The first tag of `locales` (a tag, a list of tags or `undefined`); `undefined` for none. */
function firstTag(locales: unknown): string | undefined {
    if (locales === undefined) return undefined;
    let tag: string | undefined;
    if (typeof locales === 'string') {
        tag = locales;
    } else {
        if (locales === null) throw new TypeError('Cannot convert undefined or null to object');
        const list = Array.from(locales as ArrayLike<unknown>);
        for (const t of list) {
            if (typeof t !== 'string' && (typeof t !== 'object' || t === null)) {
                throw new TypeError(`Language ID should be string or object.`);
            }
        }
        tag = list.length === 0 ? undefined : String(list[0]);
    }
    if (tag === '') throw new RangeError('Incorrect locale information provided');
    return tag;
}

/** A BCP 47 language tag in its canonical case, or a RangeError as V8's. */
function canonicalTag(tag: string): string {
    const wellFormed =
        /^[a-z]{2,3}(-[a-z]{4})?(-([a-z]{2}|\d{3}))?(-([a-z\d]{5,8}|\d[a-z\d]{3}))*(-[a-wyz\d](-[a-z\d]{2,8})+)*(-x(-[a-z\d]{1,8})+)?$/i;
    if (tag.length > 255 || !wellFormed.test(tag)) throw new RangeError('Incorrect locale information provided');
    let extension = false;
    return tag
        .split('-')
        .map((part, i) => {
            if (part.length === 1) extension = true;
            if (i === 0 || extension) return part.toLowerCase();
            if (part.length === 4 && /^[a-z]+$/i.test(part)) return part[0]!.toUpperCase() + part.slice(1).toLowerCase();
            if (part.length === 2) return part.toUpperCase();
            return part.toLowerCase();
        })
        .join('-');
}

function canonicalList(locales: unknown): string[] {
    if (locales === undefined) return [];
    const list = typeof locales === 'string' ? [locales] : Array.from(locales as ArrayLike<unknown>);
    return [...new Set(list.map((tag) => canonicalTag(String(tag))))];
}

interface Resolved {
    id: number;
    locale: string;
    usage: 'sort' | 'search';
    sensitivity: Sensitivity;
    ignorePunctuation: boolean;
    numeric: boolean;
    caseFirst: CaseFirst;
    /** How two ASCII strings compare without the host (see `asciiKey`); `None`: they do not. */
    ascii: Ascii;
}

// One host collator per distinct options in this execution.
const made = new Map<string, Resolved>();

function resolve(locales: unknown, options: unknown): Resolved {
    const tag = firstTag(locales) ?? '';
    if (options === null) throw new TypeError('Cannot convert undefined or null to object');
    const opts: Record<string, unknown> = options === undefined ? {} : Object(options);
    const usage = getOption('Collator', opts, 'usage', ['sort', 'search'] as const, 'sort')!;
    const sensitivity = getOption('Collator', opts, 'sensitivity', ['base', 'accent', 'case', 'variant'] as const, 'variant')!;
    const ignorePunctuation = opts.ignorePunctuation === undefined ? false : Boolean(opts.ignorePunctuation);
    const numeric = opts.numeric === undefined ? undefined : Boolean(opts.numeric);
    const caseFirst = getOption('Collator', opts, 'caseFirst', ['upper', 'lower', 'false'] as const, undefined);
    const key = JSON.stringify([tag, sensitivity, ignorePunctuation, numeric, caseFirst, usage]);
    const known = made.get(key);
    if (known) return known;
    let info: intl.CollatorInfo;
    try {
        info = intl.collator({
            locale: tag,
            sensitivity,
            ignorePunctuation,
            numeric,
            caseFirst: caseFirst === undefined ? undefined : caseFirst === 'upper' ? 'upper-first' : caseFirst === 'lower' ? 'lower-first' : 'off'
        });
    } catch (e) {
        throw new RangeError(hostMessage(e));
    }
    const resolved: Resolved = {
        id: info.id,
        locale: info.locale,
        usage,
        sensitivity,
        ignorePunctuation,
        numeric: info.numeric,
        caseFirst: info.caseFirst === 'upper-first' ? 'upper' : info.caseFirst === 'lower-first' ? 'lower' : 'false',
        ascii: Ascii.None
    };
    // English's collation is CLDR's root order, which `asciiKey` has
    // for ASCII text; other languages may tailor ASCII letters (Danish `aa`).
    if (/^en(-([a-z]{2}|\d{3}))?$/i.test(info.locale) && !ignorePunctuation && !resolved.numeric) {
        if (sensitivity === 'base' || sensitivity === 'accent') resolved.ascii = Ascii.Primary;
        else if (resolved.caseFirst === 'upper') resolved.ascii = Ascii.UpperFirst;
        else resolved.ascii = Ascii.LowerFirst;
    }
    made.set(key, resolved);
    return resolved;
}

const enum Ascii {
    None,
    Primary,
    LowerFirst,
    UpperFirst
}

// CLDR's root collation of ASCII, as Node's ICU orders it: each group's
// characters share a primary weight (a letter's cases), in this order;
// the other control characters are ignored. Digits and letters keep their
// order in ASCII; the whitespace and punctuation before them do not.
const ROOT_PUNCTUATION = '\t\n\v\f\r _-,;:!?.\'"()[]{}@*/\\&#%`^+<=>|~$';
const PUNCTUATION_KEY: Record<string, string> = {};
for (let i = 0; i < ROOT_PUNCTUATION.length; i++) {
    // Below '0', in root order, and above the key's separator.
    PUNCTUATION_KEY[ROOT_PUNCTUATION[i]!] = String.fromCharCode(1 + i);
}
const IGNORED = /[\x00-\x08\x0e-\x1f\x7f]/g;
const NOT_ASCII = /[^\x00-\x7f]/;
const KEYS_KEPT = 10_000;
const asciiKeys = [new Map<string, string | null>(), new Map<string, string | null>(), new Map<string, string | null>(), new Map<string, string | null>()];

/**
 * An ASCII string's sort key under ICU's root collation (its strings
 * compare as the strings do), or `null` when it is not ASCII. The primary
 * weights (letters case-folded, punctuation moved before the digits,
 * control characters dropped), then, unless only the primary level
 * counts, each character's case: lower (and uncased) first, or upper.
 * Built with the engine's native string operations and kept: comparing
 * with the host, or character by character in interpreted JavaScript,
 * made a sort of 10,000 strings take seconds.
 */
function asciiKey(text: string, mode: Ascii): string | null {
    const kept = asciiKeys[mode]!;
    const known = kept.get(text);
    if (known !== undefined) return known;
    let key: string | null = null;
    if (!NOT_ASCII.test(text)) {
        const visible = text.replace(IGNORED, '');
        key = visible.toLowerCase().replace(/[^0-9a-z]/g, (c) => PUNCTUATION_KEY[c]!);
        if (mode !== Ascii.Primary) {
            const upper = mode === Ascii.UpperFirst ? '0' : '1';
            const other = mode === Ascii.UpperFirst ? '1' : '0';
            key += '\x00' + visible.replace(/[^A-Z]/g, other).replace(/[A-Z]/g, upper);
        }
    }
    if (kept.size >= KEYS_KEPT) kept.clear();
    kept.set(text, key);
    return key;
}

function compareWith(r: Resolved, a: string, b: string): number {
    if (a === b) return 0;
    if (r.ascii !== Ascii.None) {
        // Inline lookups first: this runs once per comparison of a sort.
        const kept = asciiKeys[r.ascii]!;
        let ka = kept.get(a);
        if (ka === undefined) ka = asciiKey(a, r.ascii);
        if (ka !== null) {
            let kb = kept.get(b);
            if (kb === undefined) kb = asciiKey(b, r.ascii);
            if (kb !== null) return ka < kb ? -1 : ka > kb ? 1 : 0;
        }
    }
    return intl.compare(r.id, UTF8_OUT.encode(a), UTF8_OUT.encode(b));
}

const COMPARE = Symbol('compare');
const RESOLVED = Symbol('resolved');

/** `Intl.Collator`, callable with or without `new`, as the built-in. */
function Collator(this: unknown, locales?: unknown, options?: unknown): CollatorInstance {
    const self: CollatorInstance = new.target ? (this as CollatorInstance) : Object.create(Collator.prototype);
    Object.defineProperty(self, RESOLVED, { value: resolve(locales, options) });
    return self;
}
interface CollatorInstance {
    [RESOLVED]: Resolved;
    [COMPARE]?: (a: unknown, b: unknown) => number;
}
function resolvedOf(self: unknown, member: string): Resolved {
    const r = self && typeof self === 'object' ? (self as CollatorInstance)[RESOLVED] : undefined;
    if (r === undefined) throw new TypeError(`Method Intl.Collator.prototype.${member} called on incompatible receiver ${String(self)}`);
    return r;
}
Object.defineProperty(Collator.prototype, 'compare', {
    configurable: true,
    enumerable: false,
    // A getter returning one bound function per collator, as the built-in.
    get(this: CollatorInstance) {
        const r = resolvedOf(this, 'compare');
        if (!this[COMPARE]) {
            Object.defineProperty(this, COMPARE, { value: (a: unknown, b: unknown) => compareWith(r, String(a), String(b)) });
        }
        return this[COMPARE];
    }
});
Object.defineProperty(Collator.prototype, 'resolvedOptions', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function resolvedOptions(this: unknown) {
        const r = resolvedOf(this, 'resolvedOptions');
        return {
            locale: r.locale,
            usage: r.usage,
            sensitivity: r.sensitivity,
            ignorePunctuation: r.ignorePunctuation,
            collation: 'default',
            numeric: r.numeric,
            caseFirst: r.caseFirst
        };
    }
});
Object.defineProperty(Collator.prototype, Symbol.toStringTag, { configurable: true, value: 'Intl.Collator' });
Object.defineProperty(Collator, 'supportedLocalesOf', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function supportedLocalesOf(locales?: unknown) {
        return canonicalList(locales);
    }
});
Object.defineProperty(Collator, 'length', { value: 0 });

function toTime(date: unknown): number {
    if (date === undefined) return Date.now();
    return date instanceof Date ? date.getTime() : Number(date);
}

// V8's date `format` writes CLDR's narrow no-break space as a space (its
// parts keep it); numbers keep theirs.
const joinParts = (parts: { value: string }[]) => parts.map((p) => p.value).join('').replace(/\u202f/g, ' ');
const joinNumber = (parts: { value: string }[]) => parts.map((p) => p.value).join('');

interface Formatter<R> {
    /** `DateTimeFormat`, `NumberFormat`. */
    name: string;
    resolve(english: English, options: unknown): R;
    parts(resolved: R, value: unknown): { type: string; value: string }[];
    join(parts: { value: string }[]): string;
    resolvedOptions(resolved: R): Record<string, unknown>;
}

/**
 * An en-US `Intl` formatter constructor, callable with or without `new`,
 * with the built-in's members: `format` (a getter of one bound function),
 * `formatToParts`, `resolvedOptions`, `supportedLocalesOf`; `formatRange`
 * says it is not available. Another locale is a TypeError naming it.
 */
function formatter<R>(f: Formatter<R>): (locales?: unknown, options?: unknown) => object {
    const RESOLVED = Symbol(`${f.name} options`);
    const BOUND = Symbol(`${f.name} format`);
    type Instance = { [RESOLVED]?: R; [BOUND]?: (value?: unknown) => string };
    const ctor = function (this: unknown, locales?: unknown, options?: unknown): Instance {
        const english = englishLocale(locales);
        if (english === undefined) {
            throw new TypeError(
                `Intl.${f.name} is available for en-US only in sluice (asked: ${String(firstTag(locales))}): ` +
                    `its JavaScript engine is built without ICU's locale data.`
            );
        }
        const self: Instance = new.target ? (this as Instance) : Object.create(ctor.prototype);
        Object.defineProperty(self, RESOLVED, { value: f.resolve(english, options) });
        return self;
    };
    const resolvedOf = (self: unknown, member: string): R => {
        const r = self && typeof self === 'object' ? (self as Instance)[RESOLVED] : undefined;
        if (r === undefined) throw new TypeError(`Method Intl.${f.name}.prototype.${member} called on incompatible receiver ${String(self)}`);
        return r;
    };
    Object.defineProperty(ctor, 'name', { value: f.name });
    Object.defineProperty(ctor, 'length', { value: 0 });
    Object.defineProperty(ctor.prototype, 'format', {
        configurable: true,
        enumerable: false,
        get(this: Instance) {
            const r = resolvedOf(this, 'format');
            if (!this[BOUND]) Object.defineProperty(this, BOUND, { value: (value?: unknown) => f.join(f.parts(r, value)) });
            return this[BOUND];
        }
    });
    const members: [string, unknown][] = [
        [
            'formatToParts',
            function formatToParts(this: unknown, value?: unknown) {
                return f.parts(resolvedOf(this, 'formatToParts'), value);
            }
        ],
        [
            'resolvedOptions',
            function resolvedOptions(this: unknown) {
                return f.resolvedOptions(resolvedOf(this, 'resolvedOptions'));
            }
        ],
        ['formatRange', unavailable(`${f.name}.prototype.formatRange`)],
        ['formatRangeToParts', unavailable(`${f.name}.prototype.formatRangeToParts`)]
    ];
    for (const [name, value] of members) {
        Object.defineProperty(ctor.prototype, name, { configurable: true, writable: true, enumerable: false, value });
    }
    Object.defineProperty(ctor.prototype, Symbol.toStringTag, { configurable: true, value: `Intl.${f.name}` });
    Object.defineProperty(ctor, 'supportedLocalesOf', {
        configurable: true,
        writable: true,
        enumerable: false,
        value: function supportedLocalesOf(locales?: unknown) {
            return canonicalList(locales).filter((tag) => englishLocale(tag) !== undefined);
        }
    });
    return ctor as unknown as (locales?: unknown, options?: unknown) => object;
}

const DateTimeFormat = formatter({
    name: 'DateTimeFormat',
    resolve: (english, options) => resolveOptions(english, options, 'any', 'date'),
    parts: (r, value) => formatToParts(r, toTime(value)),
    join: joinParts,
    resolvedOptions: resolvedOptionsOf
});

const NumberFormat = formatter<NumberOptions>({
    name: 'NumberFormat',
    resolve: resolveNumberOptions,
    parts: formatNumberToParts,
    join: joinNumber,
    resolvedOptions: numberResolvedOptions
});

/**
 * `Number.prototype.toLocaleString` and BigInt's in en-US. Other locales,
 * and options sluice does not format, keep the engine's (as before sluice
 * had any: the plain number).
 */
function numberMethod(proto: { toLocaleString: unknown; valueOf: () => unknown }) {
    const engine = proto.toLocaleString as (this: unknown, ...args: unknown[]) => string;
    // The built-in `valueOf` checks `this` and unwraps it, whatever a
    // script made of its own `valueOf`.
    const unwrap = proto.valueOf;
    const method = function toLocaleString(this: unknown, locales?: unknown, options?: unknown): string {
        const value = unwrap.call(this);
        const english = englishLocale(locales);
        if (english === undefined) return engine.call(this, locales, options);
        let resolved: NumberOptions;
        try {
            resolved = resolveNumberOptions(english, options);
        } catch (e) {
            if (e instanceof Refused) return engine.call(this, locales, options);
            throw e;
        }
        return joinNumber(formatNumberToParts(resolved, value));
    };
    Object.defineProperty(method, 'length', { value: 0 });
    Object.defineProperty(proto, 'toLocaleString', { configurable: true, writable: true, enumerable: false, value: method });
}

/** `Date.prototype.toLocale*String` in en-US; other locales, and options sluice does not format, keep the engine's. */
function dateMethod(name: 'toLocaleString' | 'toLocaleDateString' | 'toLocaleTimeString', required: 'any' | 'date' | 'time', defaults: Defaults) {
    const engine = Date.prototype[name] as (this: Date, ...args: unknown[]) => string;
    const method = function (this: unknown, locales?: unknown, options?: unknown): string {
        if (!(this instanceof Date)) throw new TypeError(`this is not a Date object.`);
        const english = englishLocale(locales);
        if (english === undefined) return engine.call(this, locales, options);
        const time = this.getTime();
        if (Number.isNaN(time)) return 'Invalid Date';
        let resolved: ReturnType<typeof resolveOptions>;
        try {
            resolved = resolveOptions(english, options, required, defaults);
        } catch (e) {
            // An option sluice does not format keeps the engine's string.
            if (e instanceof Refused) return engine.call(this, locales, options);
            throw e;
        }
        return joinParts(formatToParts(resolved, time));
    };
    Object.defineProperty(method, 'name', { value: name });
    Object.defineProperty(method, 'length', { value: 0 });
    Object.defineProperty(Date.prototype, name, { configurable: true, writable: true, enumerable: false, value: method });
}

/** The parts of `Intl` sluice's engine cannot give: a clear error, not `undefined`. */
function unavailable(name: string) {
    const missing = function () {
        throw new TypeError(
            `Intl.${name} is not available in sluice: its JavaScript engine is built without ICU. ` +
                `Intl.Collator, localeCompare, String.prototype.normalize and en-US dates are (as in Node.js).`
        );
    };
    Object.defineProperty(missing, 'name', { value: name });
    return missing;
}

let defaultCollator: Resolved | undefined;

function install(): void {
    const define = (target: object, name: string, value: unknown) =>
        Object.defineProperty(target, name, { configurable: true, writable: true, enumerable: false, value });

    const localeCompare = function localeCompare(this: unknown, that: unknown, locales?: unknown, options?: unknown): number {
        if (this === null || this === undefined) {
            throw new TypeError('String.prototype.localeCompare called on null or undefined');
        }
        const a = typeof this === 'string' ? this : String(this);
        const b = typeof that === 'string' ? that : String(that);
        // The common call, in a sort's comparator: no locale, no options.
        if (locales === undefined && options === undefined) {
            defaultCollator ??= resolve(undefined, undefined);
            return compareWith(defaultCollator, a, b);
        }
        return compareWith(resolve(locales, options), a, b);
    };
    Object.defineProperty(localeCompare, 'name', { value: 'localeCompare' });
    Object.defineProperty(localeCompare, 'length', { value: 1 });
    define(String.prototype, 'localeCompare', localeCompare);

    if (typeof (String.prototype as { normalize?: unknown }).normalize !== 'function') {
        const normalize = function normalize(this: unknown, form?: unknown): string {
            if (this === null || this === undefined) {
                throw new TypeError('String.prototype.normalize called on null or undefined');
            }
            const text = String(this);
            const f = form === undefined ? 'NFC' : String(form);
            if (f !== 'NFC' && f !== 'NFD' && f !== 'NFKC' && f !== 'NFKD') {
                throw new RangeError('The normalization form should be one of NFC, NFD, NFKC, NFKD.');
            }
            // ASCII is the same in every form.
            if (/^[\x00-\x7f]*$/.test(text)) return text;
            let normalized: Uint8Array;
            try {
                normalized = intl.normalize(f.toLowerCase() as intl.NormalForm, UTF8_OUT.encode(text));
            } catch (e) {
                throw new RangeError(hostMessage(e));
            }
            return UTF8_IN.decode(normalized);
        };
        Object.defineProperty(normalize, 'name', { value: 'normalize' });
        Object.defineProperty(normalize, 'length', { value: 0 });
        define(String.prototype, 'normalize', normalize);
    }

    const g = globalThis as { Intl?: Record<string, unknown> };
    if (g.Intl === undefined) {
        const Intl: Record<string, unknown> = {};
        Object.defineProperty(Intl, Symbol.toStringTag, { configurable: true, value: 'Intl' });
        // The constructors sluice cannot give (PluralRules, ListFormat, …)
        // stay undefined, so code that tests for them takes its fallback.
        define(Intl, 'getCanonicalLocales', function getCanonicalLocales(locales?: unknown) {
            return canonicalList(locales);
        });
        define(Intl, 'Collator', Collator);
        define(Intl, 'DateTimeFormat', DateTimeFormat);
        define(Intl, 'NumberFormat', NumberFormat);
        define(globalThis, 'Intl', Intl);
        dateMethod('toLocaleString', 'any', 'all');
        dateMethod('toLocaleDateString', 'date', 'date');
        dateMethod('toLocaleTimeString', 'time', 'time');
        numberMethod(Number.prototype as unknown as { toLocaleString: unknown; valueOf: () => unknown });
        if (typeof BigInt === 'function') numberMethod(BigInt.prototype as unknown as { toLocaleString: unknown; valueOf: () => unknown });
    } else if (typeof g.Intl.Collator !== 'function') {
        define(g.Intl, 'Collator', Collator);
    }
}

install();
