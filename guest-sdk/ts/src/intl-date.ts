// `Intl.DateTimeFormat` for `en-US` (and `en`), with time zones from the
// host, formatting as Node.js 20 and 22 do (CLDR's en patterns as V8 uses
// them: `1/2/2026, 3:04:05 AM`, `hour12: false` as `h24`, ASCII spaces in
// `format`), zones named as CLDR's en names them (./tz-names.ts).
// Other locales are refused with a TypeError naming them; the engine's own
// `Date.prototype.toLocale*String` stays theirs.

import * as intl from 'nango:scripts/intl@0.2.0';
import { Refused } from './intl-number';
import { getOption, hostMessage } from './intl-options';
import { TZ_NAMES } from './tz-names';

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const ERAS = { narrow: ['B', 'A'], short: ['BC', 'AD'], long: ['Before Christ', 'Anno Domini'] };

type Text = 'narrow' | 'short' | 'long';
type Num = 'numeric' | '2-digit';
type Style = 'full' | 'long' | 'medium' | 'short';
type Cycle = 'h11' | 'h12' | 'h23' | 'h24';
type ZoneName = 'short' | 'long' | 'shortOffset' | 'longOffset' | 'shortGeneric' | 'longGeneric';

interface Fields {
    weekday?: Text;
    era?: Text;
    year?: Num;
    month?: Num | Text;
    day?: Num;
    hour?: Num;
    minute?: Num;
    second?: Num;
    fractionalSecondDigits?: 1 | 2 | 3;
    timeZoneName?: ZoneName;
}

interface Resolved extends Fields {
    locale: string;
    timeZone: string;
    hourCycle?: Cycle;
    dateStyle?: Style;
    timeStyle?: Style;
}

export interface Part {
    type: string;
    value: string;
}

/** The locale this formatter has: `en` or `en-US` (any case). */
export interface English {
    locale: string;
    /** The tag's `-u-hc`. */
    hourCycle?: Cycle;
}

/**
 * `locales` as a locale this formatter has, or `undefined`: another
 * language, or a calendar or numbering system (`-u-ca`, `-u-nu`) other
 * than the Gregorian and Latin digits.
 */
export function englishLocale(locales: unknown): English | undefined {
    let tag: unknown = locales;
    if (Array.isArray(locales)) tag = locales.length === 0 ? undefined : locales[0];
    if (tag === undefined) return { locale: 'en-US' };
    const m = /^(en)(?:-(us))?(?:-u((?:-[a-z0-9]{2,8})+))?$/i.exec(String(tag));
    if (!m) return undefined;
    const english: English = { locale: m[2] ? 'en-US' : 'en' };
    const keywords = (m[3] ?? '').toLowerCase().split('-').slice(1);
    for (let i = 0; i < keywords.length; i++) {
        const key = keywords[i]!;
        if (key.length !== 2) continue;
        const value = keywords[i + 1] !== undefined && keywords[i + 1]!.length > 2 ? keywords[i + 1]! : '';
        if (key === 'hc' && (value === 'h11' || value === 'h12' || value === 'h23' || value === 'h24')) english.hourCycle = value;
        if (key === 'ca' && value !== 'gregory') return undefined;
        if (key === 'nu' && value !== 'latn') return undefined;
    }
    return english;
}


interface Zone {
    name: string;
    offset: number;
    daylight: boolean;
}

function zoneAt(timeZone: string, ms: number): Zone {
    if (timeZone === 'UTC') return { name: 'UTC', offset: 0, daylight: false };
    try {
        const z = intl.zoneAt(timeZone, ms);
        return { name: z.name, offset: z.offsetMinutes, daylight: z.daylight };
    } catch (e) {
        throw new RangeError(hostMessage(e));
    }
}

/** The zone's name as V8 reports it (`Asia/Calcutta` for the database's `Asia/Kolkata`). */
function canonicalZone(name: string): string {
    return TZ_NAMES.canonical[name] ?? name;
}

/** `GMT+1`, `GMT+5:30`, `GMT+01:00`, `GMT+0` (CLDR's offset format). */
function gmt(offset: number, long: boolean): string {
    const sign = offset < 0 ? '-' : '+';
    const h = Math.floor(Math.abs(offset) / 60);
    const m = Math.abs(offset) % 60;
    if (long) return `GMT${sign}${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}`;
    return m === 0 ? `GMT${sign}${h}` : `GMT${sign}${h}:${String(m).padStart(2, '0')}`;
}

/** CLDR's en name of the zone (./tz-names.ts), else its offset as CLDR writes it. */
function zoneName(zone: Zone, style: ZoneName): string {
    const index = TZ_NAMES.zones[zone.name];
    const names = index === undefined ? {} : TZ_NAMES.names[index]!;
    switch (style) {
        case 'short':
            return (zone.daylight ? names.ds : names.s) ?? gmt(zone.offset, false);
        case 'long':
            return (zone.daylight ? names.dl : names.l) ?? gmt(zone.offset, true);
        case 'shortGeneric':
            return names.gs ?? gmt(zone.offset, false);
        case 'longGeneric':
            return names.gl ?? gmt(zone.offset, true);
        case 'shortOffset':
            return gmt(zone.offset, false);
        case 'longOffset':
            return gmt(zone.offset, true);
    }
}

const TEXT = ['narrow', 'short', 'long'] as const;
const NUM = ['numeric', '2-digit'] as const;
const STYLE = ['full', 'long', 'medium', 'short'] as const;
const COMPONENTS = ['weekday', 'era', 'year', 'month', 'day', 'hour', 'minute', 'second', 'fractionalSecondDigits', 'timeZoneName'] as const;

/** ECMA-402's `required` and `defaults` of ToDateTimeOptions. */
export type Defaults = 'date' | 'time' | 'all';

export function resolveOptions(english: English, options: unknown, required: 'any' | 'date' | 'time', defaults: Defaults): Resolved {
    if (options === null) throw new TypeError('Cannot convert undefined or null to object');
    const opts: Record<string, unknown> = options === undefined ? {} : Object(options);
    const locale = english.locale;
    const hour12 = opts.hour12 === undefined ? undefined : Boolean(opts.hour12);
    const hourCycleOption = getOption('DateTimeFormat', opts, 'hourCycle', ['h11', 'h12', 'h23', 'h24'] as const);
    let timeZone = 'UTC';
    if (opts.timeZone !== undefined) {
        const asked = String(opts.timeZone);
        timeZone = asked.toLowerCase() === 'utc' ? 'UTC' : zoneAt(asked, 0).name;
    }
    const f: Fields = {
        weekday: getOption('DateTimeFormat', opts, 'weekday', TEXT),
        era: getOption('DateTimeFormat', opts, 'era', TEXT),
        year: getOption('DateTimeFormat', opts, 'year', NUM),
        month: getOption('DateTimeFormat', opts, 'month', [...NUM, ...TEXT] as const),
        day: getOption('DateTimeFormat', opts, 'day', NUM),
        hour: getOption('DateTimeFormat', opts, 'hour', NUM),
        minute: getOption('DateTimeFormat', opts, 'minute', NUM),
        second: getOption('DateTimeFormat', opts, 'second', NUM),
        timeZoneName: getOption('DateTimeFormat', opts, 'timeZoneName', ['short', 'long', 'shortOffset', 'longOffset', 'shortGeneric', 'longGeneric'] as const)
    };
    if (opts.fractionalSecondDigits !== undefined) {
        const n = Number(opts.fractionalSecondDigits);
        if (!(n >= 1 && n <= 3)) throw new RangeError(`fractionalSecondDigits value is out of range.`);
        f.fractionalSecondDigits = Math.floor(n) as 1 | 2 | 3;
    }
    if (opts.dayPeriod !== undefined) {
        throw new Refused(`Intl.DateTimeFormat's dayPeriod option is not available in sluice`);
    }
    const dateStyle = getOption('DateTimeFormat', opts, 'dateStyle', STYLE);
    const timeStyle = getOption('DateTimeFormat', opts, 'timeStyle', STYLE);
    const r: Resolved = { locale, timeZone };
    if (dateStyle !== undefined || timeStyle !== undefined) {
        for (const name of COMPONENTS) {
            if (f[name] !== undefined) throw new TypeError(`Can't set option ${name} when ${dateStyle !== undefined ? 'dateStyle' : 'timeStyle'} is used`);
        }
        if (required === 'date' && (dateStyle === undefined || timeStyle !== undefined)) throw new TypeError(`Invalid option : timeStyle`);
        if (required === 'time' && (timeStyle === undefined || dateStyle !== undefined)) throw new TypeError(`Invalid option : dateStyle`);
        r.dateStyle = dateStyle;
        r.timeStyle = timeStyle;
    } else {
        const hasDate = f.weekday !== undefined || f.year !== undefined || f.month !== undefined || f.day !== undefined;
        const hasTime = f.hour !== undefined || f.minute !== undefined || f.second !== undefined || f.fractionalSecondDigits !== undefined;
        const needDefaults = (required === 'date' && !hasDate) || (required === 'time' && !hasTime) || (required === 'any' && !hasDate && !hasTime);
        if (needDefaults && (defaults === 'date' || defaults === 'all')) {
            f.year = 'numeric';
            f.month = 'numeric';
            f.day = 'numeric';
        }
        if (needDefaults && (defaults === 'time' || defaults === 'all')) {
            f.hour = 'numeric';
            f.minute = 'numeric';
            f.second = 'numeric';
        }
        Object.assign(r, f);
    }
    if (r.hour !== undefined || timeStyle !== undefined) {
        // en-US's hour cycle is h12; `hour12: false` is h24 in V8 (Node 20, 22).
        r.hourCycle = hour12 === true ? 'h12' : hour12 === false ? 'h24' : (hourCycleOption ?? english.hourCycle ?? 'h12');
    }
    // What the pattern shows: an hour of the 24-hour cycles, and minutes and
    // seconds after another field, are two digits.
    if (r.hour !== undefined && (r.hourCycle === 'h23' || r.hourCycle === 'h24')) r.hour = '2-digit';
    if (r.minute !== undefined && (r.hour !== undefined || r.second !== undefined)) r.minute = '2-digit';
    if (r.second !== undefined && r.minute !== undefined) r.second = '2-digit';
    // Alone, a minute or a second is never padded (en's `m` and `s`).
    if (r.minute !== undefined && r.hour === undefined && r.second === undefined) r.minute = 'numeric';
    if (r.second !== undefined && r.minute === undefined && r.hour === undefined) r.second = 'numeric';
    return r;
}

function pad(n: number, width: number): string {
    return String(n).padStart(width, '0');
}

const DAY_MS = 86_400_000;

/** The calendar fields of a local time in ms, past the range of `Date` too (proleptic Gregorian). */
function fieldsOf(localMs: number) {
    const days = Math.floor(localMs / DAY_MS);
    const inDay = localMs - days * DAY_MS;
    // Days to civil date (H. Hinnant's algorithm).
    const z = days + 719_468;
    const era = Math.floor(z / 146_097);
    const doe = z - era * 146_097;
    const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
    const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
    const mp = Math.floor((5 * doy + 2) / 153);
    const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
    const month = mp < 10 ? mp + 2 : mp - 10;
    const year = yoe + era * 400 + (month <= 1 ? 1 : 0);
    return {
        year,
        month,
        day,
        weekday: (((days + 4) % 7) + 7) % 7,
        hour: Math.floor(inDay / 3_600_000),
        minute: Math.floor(inDay / 60_000) % 60,
        second: Math.floor(inDay / 1000) % 60,
        millisecond: inDay % 1000
    };
}

/** The fields of a style, as the en patterns show them. */
function styleFields(r: Resolved): { fields: Fields; joiner: string } {
    const fields: Fields = {};
    switch (r.dateStyle) {
        case 'full':
            Object.assign(fields, { weekday: 'long', month: 'long', day: 'numeric', year: 'numeric' });
            break;
        case 'long':
            Object.assign(fields, { month: 'long', day: 'numeric', year: 'numeric' });
            break;
        case 'medium':
            Object.assign(fields, { month: 'short', day: 'numeric', year: 'numeric' });
            break;
        case 'short':
            Object.assign(fields, { month: 'numeric', day: 'numeric', year: '2-digit' });
            break;
    }
    switch (r.timeStyle) {
        case 'full':
            Object.assign(fields, { hour: 'numeric', minute: '2-digit', second: '2-digit', timeZoneName: 'long' });
            break;
        case 'long':
            Object.assign(fields, { hour: 'numeric', minute: '2-digit', second: '2-digit', timeZoneName: 'short' });
            break;
        case 'medium':
            Object.assign(fields, { hour: 'numeric', minute: '2-digit', second: '2-digit' });
            break;
        case 'short':
            Object.assign(fields, { hour: 'numeric', minute: '2-digit' });
            break;
    }
    if (fields.hour !== undefined && (r.hourCycle === 'h23' || r.hourCycle === 'h24')) fields.hour = '2-digit';
    const joiner = r.dateStyle === 'full' || r.dateStyle === 'long' ? ' at ' : ', ';
    return { fields, joiner };
}

export function formatToParts(r: Resolved, ms: number): Part[] {
    if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) throw new RangeError('Invalid time value');
    const zone = zoneAt(r.timeZone, ms);
    const local = fieldsOf(ms + zone.offset * 60_000);
    const styled = r.dateStyle !== undefined || r.timeStyle !== undefined;
    const { fields: f, joiner: styleJoiner } = styled ? styleFields(r) : { fields: r as Fields, joiner: '' };

    const date: Part[] = [];
    const lit = (parts: Part[], value: string) => parts.push({ type: 'literal', value });
    // Years before 1 are counted back in the BC era (1 BC is year 0).
    const year = local.year > 0 ? local.year : 1 - local.year;
    const yearText = f.year === '2-digit' ? pad(year % 100, 2) : String(year);
    const dayText = f.day === '2-digit' ? pad(local.day, 2) : String(local.day);
    const month = local.month;
    const weekday = f.weekday && DAYS[local.weekday]!;
    const weekdayText = weekday && (f.weekday === 'long' ? weekday : f.weekday === 'short' ? weekday.slice(0, 3) : weekday[0]!);
    const textMonth = f.month === 'long' || f.month === 'short' || f.month === 'narrow';
    const monthText =
        f.month === undefined
            ? ''
            : f.month === 'long'
              ? MONTHS[month]!
              : f.month === 'short'
                ? MONTHS[month]!.slice(0, 3)
                : f.month === 'narrow'
                  ? MONTHS[month]![0]!
                  : f.month === '2-digit'
                    ? pad(month + 1, 2)
                    : String(month + 1);
    const core: Part[] = [];
    let appendDay = false;
    if (textMonth) {
        core.push({ type: 'month', value: monthText });
        if (f.day !== undefined) {
            lit(core, ' ');
            core.push({ type: 'day', value: dayText });
        }
        if (f.year !== undefined) {
            lit(core, f.day !== undefined ? ', ' : ' ');
            core.push({ type: 'year', value: yearText });
        }
    } else {
        const numeric: Part[] = [];
        if (f.month !== undefined) numeric.push({ type: 'month', value: monthText });
        if (f.day !== undefined && (f.month !== undefined || f.year === undefined)) numeric.push({ type: 'day', value: dayText });
        else if (f.day !== undefined) appendDay = true;
        if (f.year !== undefined) numeric.push({ type: 'year', value: yearText });
        numeric.forEach((p, i) => {
            if (i > 0) lit(core, '/');
            core.push(p);
        });
    }
    if (f.era !== undefined) {
        if (core.length > 0) lit(core, ' ');
        core.push({ type: 'era', value: ERAS[f.era][local.year > 0 ? 1 : 0]! });
    }
    if (weekdayText) {
        const dayOnly = f.day !== undefined && f.month === undefined && f.year === undefined;
        if (core.length === 0) {
            date.push({ type: 'weekday', value: weekdayText });
        } else if (dayOnly || (f.month !== undefined && f.day === undefined) || (f.month === undefined && f.year !== undefined)) {
            // en's `Ed` is `d E`; a month or a year without a day puts the weekday last.
            date.push(...core);
            lit(date, ' ');
            date.push({ type: 'weekday', value: weekdayText });
        } else {
            date.push({ type: 'weekday', value: weekdayText });
            lit(date, ', ');
            date.push(...core);
        }
    } else {
        date.push(...core);
    }
    if (appendDay) {
        lit(date, ' (day: ');
        date.push({ type: 'day', value: dayText });
        lit(date, ')');
    }

    const time: Part[] = [];
    const cycle = r.hourCycle ?? 'h12';
    const h = local.hour;
    if (f.hour !== undefined) {
        const hour = cycle === 'h12' ? h % 12 || 12 : cycle === 'h11' ? h % 12 : cycle === 'h24' ? h || 24 : h;
        time.push({ type: 'hour', value: f.hour === '2-digit' ? pad(hour, 2) : String(hour) });
    }
    let appendSecond = false;
    if (f.minute !== undefined) {
        if (time.length > 0) lit(time, ':');
        time.push({ type: 'minute', value: f.minute === '2-digit' ? pad(local.minute, 2) : String(local.minute) });
    }
    if (f.second !== undefined) {
        if (f.hour !== undefined && f.minute === undefined) {
            appendSecond = true;
        } else {
            if (time.length > 0) lit(time, ':');
            time.push({ type: 'second', value: f.second === '2-digit' ? pad(local.second, 2) : String(local.second) });
        }
    }
    if (f.fractionalSecondDigits !== undefined) {
        if (time.length > 0) lit(time, '.');
        time.push({ type: 'fractionalSecond', value: pad(local.millisecond, 3).slice(0, f.fractionalSecondDigits) });
    }
    if (f.hour !== undefined && (cycle === 'h11' || cycle === 'h12')) {
        // CLDR's narrow no-break space; V8's `format` makes it a space.
        lit(time, '\u202f');
        time.push({ type: 'dayPeriod', value: h < 12 ? 'AM' : 'PM' });
    }
    if (appendSecond) {
        lit(time, ' (second: ');
        time.push({ type: 'second', value: String(local.second) });
        lit(time, ')');
    }

    const parts: Part[] = [...date];
    if (time.length > 0) {
        if (date.length > 0) {
            const weekdayOnly = weekdayText && f.month === undefined && f.day === undefined && f.year === undefined;
            const joiner = styled
                ? styleJoiner
                : f.month === 'long'
                  ? ' at '
                  : weekdayOnly
                    ? // en's `E h a`, `E HH:mm`; a lone 24-hour hour has no such pattern.
                      (cycle === 'h23' || cycle === 'h24') && f.hour !== undefined && f.minute === undefined
                        ? ', '
                        : ' '
                    : ', ';
            lit(parts, joiner);
        }
        parts.push(...time);
    }
    if (f.timeZoneName !== undefined) {
        lit(parts, time.length > 0 ? ' ' : ', ');
        parts.push({ type: 'timeZoneName', value: zoneName(zone, f.timeZoneName) });
    }
    return parts;
}

/** `resolvedOptions()` in V8's order. */
export function resolvedOptionsOf(r: Resolved): Record<string, unknown> {
    const out: Record<string, unknown> = { locale: r.locale, calendar: 'gregory', numberingSystem: 'latn', timeZone: canonicalZone(r.timeZone) };
    if (r.hourCycle !== undefined) {
        out.hourCycle = r.hourCycle;
        out.hour12 = r.hourCycle === 'h11' || r.hourCycle === 'h12';
    }
    for (const name of COMPONENTS) {
        if (r[name] !== undefined) out[name] = r[name];
    }
    if (r.dateStyle !== undefined) out.dateStyle = r.dateStyle;
    if (r.timeStyle !== undefined) out.timeStyle = r.timeStyle;
    return out;
}
