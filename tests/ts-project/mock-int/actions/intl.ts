import { z } from 'zod';
import type { NangoAction } from '../../models';

function attempt(f: () => unknown): unknown {
    try {
        return f();
    } catch (e) {
        return `${(e as Error).name}: ${(e as Error).message}`;
    }
}

function numbers(): Record<string, unknown> {
    const usd = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD' });
    return {
        plain: (1234567.891).toLocaleString(),
        en: (1234.5).toLocaleString('en-US', { minimumFractionDigits: 2 }),
        halfUp: new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 }).format(1.005),
        usd: usd.format(-1234.5),
        accounting: new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', currencySign: 'accounting' }).format(-1234.5),
        chf: new Intl.NumberFormat('en-US', { style: 'currency', currency: 'CHF' }).format(1234.5),
        jpy: new Intl.NumberFormat('en-US', { style: 'currency', currency: 'JPY' }).format(1234.5),
        percent: new Intl.NumberFormat('en-US', { style: 'percent', maximumFractionDigits: 1 }).format(0.2567),
        significant: new Intl.NumberFormat('en-US', { maximumSignificantDigits: 3 }).format(0.000123456),
        big: (123456789n).toLocaleString('en-US'),
        huge: (1e21).toLocaleString('en-US'),
        sign: new Intl.NumberFormat('en-US', { signDisplay: 'exceptZero' }).format(5),
        idr: new Intl.NumberFormat('en-US', { style: 'currency', currency: 'IDR' }).format(1234.567),
        sekNarrow: new Intl.NumberFormat('en-US', { style: 'currency', currency: 'SEK', currencyDisplay: 'narrowSymbol' }).format(1),
        groupingText: new Intl.NumberFormat('en-US', { useGrouping: 'false' as unknown as boolean }).format(1000),
        hugeText: new Intl.NumberFormat('en-US').format('1e400' as unknown as number),
        parts: usd.formatToParts(-1234.5),
        resolved: usd.resolvedOptions(),
        noCurrency: attempt(() => new Intl.NumberFormat('en-US', { style: 'currency' })),
        compact: attempt(() => new Intl.NumberFormat('en-US', { notation: 'compact' }).format(1234)),
        german: attempt(() => new Intl.NumberFormat('de-DE').format(1234.5))
    };
}

function dates(): Record<string, unknown> {
    const at = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 123));
    const midnight = new Date(Date.UTC(2026, 6, 2, 0, 4, 5));
    const f = (options?: Intl.DateTimeFormatOptions, date = at) => attempt(() => new Intl.DateTimeFormat('en-US', options).format(date));
    return {
        default: at.toLocaleString('en-US'),
        date: at.toLocaleDateString(),
        time: at.toLocaleTimeString('en-US'),
        netsuite: at
            .toLocaleString('en-US', { year: '2-digit', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: true, timeZone: 'Asia/Kolkata' })
            .replace(',', ''),
        newYork: at.toLocaleString('en-US', { timeZone: 'america/new_york', timeZoneName: 'short' }),
        summer: f({ timeZone: 'America/Los_Angeles', timeStyle: 'full' }, midnight),
        h24: f({ hour: 'numeric', minute: 'numeric', hour12: false }, midnight),
        h23: f({ hour: 'numeric', minute: 'numeric', hourCycle: 'h23' }, midnight),
        styles: f({ dateStyle: 'full', timeStyle: 'long' }),
        medium: f({ dateStyle: 'medium', timeStyle: 'short', timeZone: 'Asia/Tokyo' }),
        short: f({ dateStyle: 'short' }),
        words: f({ weekday: 'long', year: 'numeric', month: 'long', day: 'numeric', hour: 'numeric' }),
        weekdayLast: f({ weekday: 'short', day: 'numeric' }),
        monthDay: f({ month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' }),
        odd: f({ day: 'numeric', year: 'numeric' }),
        fraction: f({ hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3 }),
        offset: f({ timeZone: 'Asia/Kolkata', timeZoneName: 'shortOffset' }),
        era: at.toLocaleString('en-US', { era: 'short' }),
        parts: new Intl.DateTimeFormat('en-US', { month: '2-digit', day: '2-digit', year: 'numeric' }).formatToParts(at),
        resolved: new Intl.DateTimeFormat('en-US', { hour: 'numeric', minute: 'numeric', hour12: false }).resolvedOptions(),
        zone: new Intl.DateTimeFormat().resolvedOptions().timeZone,
        invalid: new Date(NaN).toLocaleString('en-US'),
        badZone: f({ timeZone: 'Mars/Olympus' }),
        styleAndField: f({ dateStyle: 'short', month: 'long' }),
        partsSpace: new Intl.DateTimeFormat('en-US', { hour: 'numeric', minute: 'numeric' }).formatToParts(at).map((p) => p.value),
        monthYearTime: f({ month: 'long', year: 'numeric', hour: 'numeric', minute: '2-digit' }),
        weekdayHour24: f({ weekday: 'long', hour: 'numeric', hour12: false }),
        weekdayTime24: f({ weekday: 'long', hour: 'numeric', minute: 'numeric', hour12: false }),
        bc: new Date(Date.UTC(-50, 2, 3)).toLocaleDateString('en-US', { year: 'numeric', month: 'numeric', day: 'numeric', era: 'short' }),
        farFuture: f({ month: 'short', day: 'numeric', year: 'numeric', timeZone: 'Asia/Tokyo' }, new Date(8.64e15)),
        tagCycle: at.toLocaleString('en-US-u-hc-h23'),
        bothStyles: attempt(() => at.toLocaleDateString('en-US', { dateStyle: 'full', timeStyle: 'short' })),
        utcOffset: f({ timeZone: 'UTC', timeZoneName: 'shortOffset' }),
        paris: f({ timeZone: 'Europe/Paris', timeStyle: 'full' }),
        londonSummer: f({ timeZone: 'Europe/London', timeZoneName: 'long' }, midnight),
        kolkata: new Intl.DateTimeFormat('en-US', { timeZone: 'asia/kolkata' }).resolvedOptions().timeZone,
        otherLocale: f.call(null, undefined) && attempt(() => new Intl.DateTimeFormat('de-DE').format(at))
    };
}

// Unicode property escapes, which the engine (no ICU) does not know: the
// compiler spells them out as code point ranges.
class Digits extends RegExp {}

function regex(): Record<string, unknown> {
    const digits = new Digits('\\p{Nd}+', 'u');
    /(\d)/.exec('x5');
    const legacy = RegExp.$1;
    const text = 'Crème Brûlée, 東京 & Αθήνα 42٣!';
    return {
        letters: text.match(/\p{L}+/gu),
        notLetters: text.replace(/\P{L}+/gu, '_'),
        inClass: text.match(/[\p{Lu}\d]/gu),
        negatedClass: text.match(/[^\p{L}\s]/gu),
        longNames: text.match(/[\p{Letter}\p{General_Category=Decimal_Number}]+/gu),
        script: text.match(/\p{Script=Greek}+/u)?.[0],
        scriptExtensions: /^\p{scx=Hira}$/u.test('ー'),
        diacritics: 'Crème Brûlée'.normalize('NFD').replace(/\p{Diacritic}/gu, ''),
        caseInsensitive: /^\p{Lu}+$/iu.test('abc'),
        sets: 'aBc1Д'.match(/[\p{L}--\p{Ll}]/gv),
        emoji: 'ok 👍 ✅'.match(/\p{Extended_Pictographic}/gu),
        named: /(?<word>\p{L}+)-(?<n>\p{Nd}+)/u.exec('Ünïcode-٤٢')?.groups,
        // Without the u flag `\p` is a plain `p`.
        notRewritten: /\p{L}/.test('p{L}'),
        // Patterns made at run time, zod's `emoji()` among them.
        dynamic: new RegExp('^\\p{Lu}\\p{Ll}+$', 'u').test('Ödön'),
        dynamicClass: 'a1-Б'.match(new RegExp('[\\p{L}\\d]', 'gu')),
        dynamicNegated: 'a1-Б'.replace(new RegExp('[^\\P{L}]', 'gu'), '*'),
        dynamicSets: 'aBc1Д'.match(new RegExp('[\\p{L}--[a-z]]', 'gv')),
        called: RegExp('\\P{L}+', 'gu')[Symbol.replace]('ab12cd', '_'),
        zodEmoji: [z.string().emoji().safeParse('👍✅').success, z.string().emoji().safeParse('a').success],
        instance: new RegExp('\\p{L}', 'u') instanceof RegExp,
        subclass: [digits instanceof Digits, digits instanceof RegExp, digits.test('x٣٤')],
        split: 'a1b٢c'.split(new RegExp('\\p{Nd}', 'u')),
        legacy,
        // Case-insensitive sets are closed under Unicode case folding (the
        // engine folds few characters itself): ſ, the Kelvin sign, Deseret.
        caseFolded: [/^\p{Lu}$/iu.test('ſ'), /^\p{Ll}$/iu.test('\u212a'), /^\p{Lu}+$/iu.test('𐐨'), new RegExp('^\\p{Lu}$', 'iu').test('ſ')],
        // `\P` with `i`: the u flag folds the complement, v complements the folded set.
        // A `v` class's set operations with `i` fold case, as Node's do.
        foldedSets: ['a', 'A', 'é', 'É', 'ſ'].map((c) => (/^[\p{L}--[a-z]]$/iv.test(c) ? 1 : 0)).join(''),
        // A pattern without `u` given it, and `RegExp` as itself.
        reflagged: new RegExp(/\p{L}/, 'u').test('é'),
        itself: [/x/.constructor === RegExp, RegExp.name],
        complements: [/^\P{Lu}$/iu.test('a'), /^\P{Lu}$/iv.test('a'), new RegExp('^\\P{Lu}$', 'iv').test('a'), /^[^\P{Lu}]$/iv.test('a')]
    };
}

export default async function runAction(_nango: NangoAction): Promise<Record<string, unknown>> {
    const words = ['Zebra', 'banana', 'apple', 'Banana', 'Apple', 'äpple', '_x', '-x', 'item 10', 'item 9'];
    const byName = new Intl.Collator('en', { numeric: true });
    return {
        sorted: [...words].sort((a, b) => a.localeCompare(b)),
        numeric: [...words].sort(byName.compare),
        swedish: ['ä', 'z', 'a'].sort(new Intl.Collator('sv').compare),
        base: 'a'.localeCompare('Á', undefined, { sensitivity: 'base' }),
        resolved: new Intl.Collator('en-u-kn', { sensitivity: 'accent' }).resolvedOptions(),
        withoutNew: (Intl.Collator as unknown as () => Intl.Collator)().compare('a', 'b'),
        slug: 'Crème Brûlée à la carte'.normalize('NFD').replace(/[\u0300-\u036f]/g, ''),
        nfc: 'e\u0301'.normalize() === '\u00e9',
        nfkc: '\ufb01'.normalize('NFKC'),
        badForm: attempt(() => 'x'.normalize('NFX')),
        badTag: attempt(() => 'a'.localeCompare('b', 'en_US!')),
        badOption: attempt(() => new Intl.Collator('en', { sensitivity: 'loud' as 'base' })),
        pluralRules: typeof (Intl as { PluralRules?: unknown }).PluralRules,
        numbers: numbers(),
        canonical: Intl.getCanonicalLocales(['EN-us', 'zh-hant-tw', 'en-US']),
        emptyTag: attempt(() => 'a'.localeCompare('b', '')),
        recalled: (Intl.Collator as unknown as (this: unknown, l: string) => Intl.Collator).call(new Intl.Collator('en'), 'sv').resolvedOptions().locale,
        dates: dates(),
        regex: regex()
    };
}
