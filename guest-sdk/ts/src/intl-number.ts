// `Intl.NumberFormat` for `en-US` (and `en`), formatting as Node.js does:
// the number's shortest decimal form (what `String(x)` prints, as ICU
// takes it) rounded half away from zero in decimal, so `1.005` to two
// digits is `1.01`; grouping by three; CLDR's en currency data
// (./currencies.ts). Styles
// `decimal`, `percent` and `currency`; `unit`, compact and scientific
// notations and currency names are refused with a TypeError naming them.

import { CURRENCIES } from './currencies';
import { getOption } from './intl-options';
import type { English } from './intl-date';

export interface Part {
    type: string;
    value: string;
}

type Style = 'decimal' | 'percent' | 'currency';
type SignDisplay = 'auto' | 'never' | 'always' | 'exceptZero' | 'negative';
type Grouping = 'auto' | 'always' | 'min2' | false;

export interface NumberOptions {
    locale: string;
    style: Style;
    currency?: string;
    currencyDisplay?: 'symbol' | 'narrowSymbol' | 'code';
    currencySign?: 'standard' | 'accounting';
    minimumIntegerDigits: number;
    minimumFractionDigits?: number;
    maximumFractionDigits?: number;
    minimumSignificantDigits?: number;
    maximumSignificantDigits?: number;
    useGrouping: Grouping;
    signDisplay: SignDisplay;
    trailingZeroDisplay?: 'auto' | 'stripIfInteger';
}

/** An option sluice does not format (`toLocaleString` then keeps the engine's). */
export class Refused extends TypeError {}

function refused(what: string): never {
    throw new Refused(`Intl.NumberFormat's ${what} is not available in sluice: its JavaScript engine is built without ICU's locale data.`);
}

function digitsOption(opts: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
    const value = opts[name];
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!(n >= min && n <= max)) throw new RangeError(`${name} value is out of range.`);
    return Math.floor(n);
}

export function resolveNumberOptions(english: English, options: unknown): NumberOptions {
    if (options === null) throw new TypeError('Cannot convert undefined or null to object');
    const opts: Record<string, unknown> = options === undefined ? {} : Object(options);
    const style = String(opts.style ?? 'decimal');
    if (style === 'unit') refused(`style 'unit'`);
    const r: NumberOptions = {
        locale: english.locale,
        style: getOption('NumberFormat', opts, 'style', ['decimal', 'percent', 'currency'] as const, 'decimal'),
        minimumIntegerDigits: 1,
        useGrouping: 'auto',
        signDisplay: 'auto'
    };
    if (opts.currency !== undefined) {
        const code = String(opts.currency);
        if (!/^[a-z]{3}$/i.test(code)) throw new RangeError(`Invalid currency code : ${code}`);
        r.currency = code.toUpperCase();
    }
    if (r.style === 'currency') {
        if (r.currency === undefined) throw new TypeError('Currency code is required with currency style.');
        if (opts.currencyDisplay === 'name') refused(`currencyDisplay 'name'`);
        r.currencyDisplay = getOption('NumberFormat', opts, 'currencyDisplay', ['symbol', 'narrowSymbol', 'code'] as const, 'symbol');
        r.currencySign = getOption('NumberFormat', opts, 'currencySign', ['standard', 'accounting'] as const, 'standard');
    }
    getOption('NumberFormat', opts, 'localeMatcher', ['lookup', 'best fit'] as const, 'best fit');
    if (opts.numberingSystem !== undefined && String(opts.numberingSystem) !== 'latn') refused(`numberingSystem '${String(opts.numberingSystem)}'`);
    if (opts.roundingPriority !== undefined && opts.roundingPriority !== 'auto') refused(`roundingPriority '${String(opts.roundingPriority)}'`);
    r.trailingZeroDisplay = getOption('NumberFormat', opts, 'trailingZeroDisplay', ['auto', 'stripIfInteger'] as const, 'auto');
    const notation = String(opts.notation ?? 'standard');
    if (notation !== 'standard') refused(`notation '${notation}'`);
    if (opts.roundingMode !== undefined && opts.roundingMode !== 'halfExpand') refused(`roundingMode '${String(opts.roundingMode)}'`);
    if (opts.roundingIncrement !== undefined && Number(opts.roundingIncrement) !== 1) refused('roundingIncrement');
    r.minimumIntegerDigits = digitsOption(opts, 'minimumIntegerDigits', 1, 21) ?? 1;
    const minSig = digitsOption(opts, 'minimumSignificantDigits', 1, 21);
    const maxSig = digitsOption(opts, 'maximumSignificantDigits', 1, 21);
    const minFrac = digitsOption(opts, 'minimumFractionDigits', 0, 100);
    const maxFrac = digitsOption(opts, 'maximumFractionDigits', 0, 100);
    if (minSig !== undefined || maxSig !== undefined) {
        r.minimumSignificantDigits = minSig ?? 1;
        r.maximumSignificantDigits = maxSig ?? 21;
        if (r.minimumSignificantDigits > r.maximumSignificantDigits) throw new RangeError('maximumSignificantDigits value is out of range.');
    } else {
        const currencyDigits = r.style === 'currency' ? (CURRENCIES[r.currency!]?.d ?? 2) : 0;
        const defaultMin = r.style === 'currency' ? currencyDigits : 0;
        const defaultMax = r.style === 'currency' ? currencyDigits : r.style === 'percent' ? 0 : 3;
        if (minFrac !== undefined && maxFrac !== undefined && minFrac > maxFrac) throw new RangeError('maximumFractionDigits value is out of range.');
        r.minimumFractionDigits = minFrac ?? (maxFrac !== undefined ? Math.min(defaultMin, maxFrac) : defaultMin);
        r.maximumFractionDigits = maxFrac ?? Math.max(defaultMax, r.minimumFractionDigits);
    }
    // ECMA-402's GetBooleanOrStringNumberFormatOption.
    const grouping = opts.useGrouping;
    if (grouping !== undefined) {
        if (grouping === true) r.useGrouping = 'always';
        else if (!grouping) r.useGrouping = false;
        else {
            const text = String(grouping);
            if (text === 'true' || text === 'false') r.useGrouping = 'auto';
            else r.useGrouping = getOption('NumberFormat', { useGrouping: text }, 'useGrouping', ['auto', 'always', 'min2'] as const, 'auto');
        }
    }
    r.signDisplay = getOption('NumberFormat', opts, 'signDisplay', ['auto', 'never', 'always', 'exceptZero', 'negative'] as const, 'auto');
    return r;
}

/** A decimal: `digits` (no leading zeros, or "0") times 10^`exponent`. */
interface Decimal {
    digits: string;
    exponent: number;
}

/** The shortest decimal that reads back as `x` (finite, not negative). */
function decimalOf(x: number | bigint | string): Decimal {
    const text = typeof x === 'bigint' ? x.toString() : typeof x === 'string' ? x : String(x);
    const m = /^(\d*)(?:\.(\d*))?(?:e([+-]?\d+))?$/i.exec(text);
    if (!m) return { digits: '0', exponent: 0 };
    const whole = m[1] ?? '';
    const frac = m[2] ?? '';
    let digits = (whole + frac).replace(/^0+/, '');
    let exponent = Number(m[3] ?? 0) - frac.length;
    if (digits === '') return { digits: '0', exponent: 0 };
    const trailing = digits.length - digits.replace(/0+$/, '').length;
    digits = digits.slice(0, digits.length - trailing);
    exponent += trailing;
    return { digits, exponent };
}

/** Rounds half away from zero to the digit at 10^`at`. */
function roundAt(d: Decimal, at: number): Decimal {
    if (d.exponent >= at) return d;
    const keep = d.digits.length - (at - d.exponent);
    if (keep < 0) return { digits: '0', exponent: 0 };
    const head = d.digits.slice(0, keep);
    const up = d.digits.charCodeAt(keep) >= 53; // '5'
    let digits = head;
    if (up) {
        const n = (BigInt(head === '' ? '0' : head) + 1n).toString();
        digits = n;
    }
    digits = digits.replace(/^0+/, '');
    if (digits === '') return { digits: '0', exponent: 0 };
    let exponent = at;
    const trimmed = digits.replace(/0+$/, '');
    exponent += digits.length - trimmed.length;
    return { digits: trimmed, exponent };
}

/** The integer and fraction texts of `d` under the options' digits. */
function digitsText(d: Decimal, r: NumberOptions): { integer: string; fraction: string } {
    let rounded: Decimal;
    let minFraction: number;
    if (r.maximumSignificantDigits !== undefined) {
        const magnitude = d.digits === '0' ? 0 : d.digits.length + d.exponent; // digits before the point
        rounded = roundAt(d, magnitude - r.maximumSignificantDigits);
        const roundedMagnitude = rounded.digits === '0' ? 1 : rounded.digits.length + rounded.exponent;
        minFraction = Math.max(0, r.minimumSignificantDigits! - roundedMagnitude);
    } else {
        rounded = roundAt(d, -r.maximumFractionDigits!);
        minFraction = r.minimumFractionDigits!;
    }
    const { digits, exponent } = rounded;
    let integer: string;
    let fraction: string;
    if (exponent >= 0) {
        integer = digits === '0' ? '0' : digits + '0'.repeat(exponent);
        fraction = '';
    } else {
        const point = digits.length + exponent;
        integer = point > 0 ? digits.slice(0, point) : '0';
        fraction = point > 0 ? digits.slice(point) : '0'.repeat(-point) + digits;
    }
    if (fraction.length < minFraction) fraction = fraction.padEnd(minFraction, '0');
    if (integer.length < r.minimumIntegerDigits) integer = integer.padStart(r.minimumIntegerDigits, '0');
    return { integer, fraction };
}

function groups(integer: string, grouping: Grouping): string[] {
    if (grouping === false || integer.length <= 3 || (grouping === 'min2' && integer.length < 5)) return [integer];
    const first = integer.length % 3 || 3;
    const out = [integer.slice(0, first)];
    for (let i = first; i < integer.length; i += 3) out.push(integer.slice(i, i + 3));
    return out;
}

export function formatNumberToParts(r: NumberOptions, value: unknown): Part[] {
    let x: number | bigint | string;
    if (typeof value === 'bigint') x = value;
    else if (typeof value === 'string' && /^\s*[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*$/i.test(value) && Number.isFinite(Number(value))) x = value.trim();
    else x = Number(value);
    const negative = typeof x === 'bigint' ? x < 0n : typeof x === 'string' ? x.startsWith('-') : x < 0 || Object.is(x, -0);
    const magnitude: number | bigint | string = typeof x === 'bigint' ? (x < 0n ? -x : x) : typeof x === 'string' ? x.replace(/^[+-]/, '') : Math.abs(x);
    const body: Part[] = [];
    let zero = false;
    if (typeof magnitude === 'number' && Number.isNaN(magnitude)) {
        body.push({ type: 'nan', value: 'NaN' });
    } else if (magnitude === Infinity) {
        body.push({ type: 'infinity', value: '∞' });
    } else {
        let d = decimalOf(magnitude);
        if (r.style === 'percent' && d.digits !== '0') d = { digits: d.digits, exponent: d.exponent + 2 };
        const text = digitsText(d, r);
        const integer = text.integer;
        const fraction = r.trailingZeroDisplay === 'stripIfInteger' && /^0*$/.test(text.fraction) ? '' : text.fraction;
        zero = /^0*$/.test(integer + fraction);
        const grouped = groups(integer, r.useGrouping);
        grouped.forEach((g, i) => {
            if (i > 0) body.push({ type: 'group', value: ',' });
            body.push({ type: 'integer', value: g });
        });
        if (fraction !== '') {
            body.push({ type: 'decimal', value: '.' });
            body.push({ type: 'fraction', value: fraction });
        }
    }
    if (r.style === 'percent') body.push({ type: 'percentSign', value: '%' });
    if (r.style === 'currency') {
        const data = CURRENCIES[r.currency!];
        const code = `${r.currency!}\u00a0`;
        let symbol = r.currencyDisplay === 'code' ? code : r.currencyDisplay === 'narrowSymbol' ? (data?.n ?? data?.s ?? code) : (data?.s ?? code);
        // The no-break space parts a symbol from digits only (`CHF NaN` has none).
        const apart = symbol.endsWith('\u00a0');
        if (apart) symbol = symbol.slice(0, -1);
        const digits = body[0]?.type === 'integer';
        body.unshift(...(apart && digits ? [{ type: 'currency', value: symbol }, { type: 'literal', value: '\u00a0' }] : [{ type: 'currency', value: symbol }]));
    }
    const isNaN = body.some((p) => p.type === 'nan');
    let sign: '' | '-' | '+' = '';
    switch (r.signDisplay) {
        case 'auto':
            sign = negative && !isNaN ? '-' : '';
            break;
        case 'always':
            sign = negative && !isNaN ? '-' : '+';
            break;
        case 'exceptZero':
            sign = zero || isNaN ? '' : negative ? '-' : '+';
            break;
        case 'negative':
            sign = negative && !zero && !isNaN ? '-' : '';
            break;
        case 'never':
            sign = '';
    }
    if (sign === '-' && r.style === 'currency' && r.currencySign === 'accounting') {
        return [{ type: 'literal', value: '(' }, ...body, { type: 'literal', value: ')' }];
    }
    if (sign !== '') body.unshift({ type: sign === '-' ? 'minusSign' : 'plusSign', value: sign });
    return body;
}

/** `resolvedOptions()` in V8's order. */
export function numberResolvedOptions(r: NumberOptions): Record<string, unknown> {
    const out: Record<string, unknown> = { locale: r.locale, numberingSystem: 'latn', style: r.style };
    if (r.style === 'currency') {
        out.currency = r.currency;
        out.currencyDisplay = r.currencyDisplay;
        // V8 reports accounting signs as standard when no sign shows.
        out.currencySign = r.signDisplay === 'never' ? 'standard' : r.currencySign;
    }
    out.minimumIntegerDigits = r.minimumIntegerDigits;
    if (r.maximumSignificantDigits !== undefined) {
        out.minimumSignificantDigits = r.minimumSignificantDigits;
        out.maximumSignificantDigits = r.maximumSignificantDigits;
    } else {
        out.minimumFractionDigits = r.minimumFractionDigits;
        out.maximumFractionDigits = r.maximumFractionDigits;
    }
    Object.assign(out, {
        useGrouping: r.useGrouping,
        notation: 'standard',
        signDisplay: r.signDisplay,
        roundingMode: 'halfExpand',
        roundingIncrement: 1,
        trailingZeroDisplay: r.trailingZeroDisplay ?? 'auto',
        roundingPriority: 'auto'
    });
    return out;
}
