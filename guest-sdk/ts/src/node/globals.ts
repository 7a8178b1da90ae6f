// Injected into every script bundle: the globals the original's sandbox
// provides beyond the JavaScript built-ins (`Buffer`; `URL`,
// `URLSearchParams`, `console` and `setTimeout` come with the engine),
// and what Node 20 has that the npm `buffer` package and the engine lack.
import { Buffer } from 'buffer';

export { Buffer };

// ------ Buffer's `base64url` (Node has it; npm `buffer` 6 does not)

// Scripts use it for JWTs and Gmail's `raw`. The package's own methods are
// wrapped in place, so `import { Buffer } from 'buffer'`, `node:buffer`
// and the global are one class with it. Decoding is base64's (the package
// reads `-` and `_` as `+` and `/`, and padding is optional); encoding
// drops the padding and uses the URL-safe alphabet, as Node does.
{
    const BASE64URL = 'base64url';
    const isUrl = (encoding: unknown) => typeof encoding === 'string' && encoding.toLowerCase() === BASE64URL;
    /** `args` with a `base64url` encoding (at `from` or later) as `base64`. */
    const mapped = (args: unknown[], from: number): unknown[] =>
        args.map((arg, i) => (i >= from && isUrl(arg) ? 'base64' : arg));
    type Method = (this: unknown, ...args: unknown[]) => unknown;
    const get = (target: object, name: string) => Reflect.get(target, name) as Method;
    const put = (target: object, name: string, value: Method) => {
        Object.defineProperty(value, 'name', { value: name });
        Object.defineProperty(target, name, { configurable: true, writable: true, enumerable: true, value });
    };
    const wrap = (target: object, name: string, from: number) => {
        const original = get(target, name);
        put(target, name, function (this: unknown, ...args: unknown[]) {
            return original.apply(this, mapped(args, from));
        });
    };
    wrap(Buffer, 'from', 1);
    wrap(Buffer, 'alloc', 2);
    wrap(Buffer, 'byteLength', 1);
    for (const name of ['write', 'fill', 'indexOf', 'lastIndexOf', 'includes']) wrap(Buffer.prototype, name, 1);

    const isEncoding = get(Buffer, 'isEncoding');
    put(Buffer, 'isEncoding', function (this: unknown, encoding: unknown) {
        return isUrl(encoding) || isEncoding.call(Buffer, encoding);
    });

    const toString = get(Buffer.prototype, 'toString');
    const toUrl = (base64: string) => base64.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    // UTF-8 is decoded as Node decodes it, by WHATWG's rule (one U+FFFD
    // per ill-formed subsequence: a truncated 4-byte sequence is one, where
    // the package made one per byte), a leading BOM kept.
    const UTF8 = new TextDecoder('utf-8', { ignoreBOM: true });
    const subarray = Uint8Array.prototype.subarray;
    const isUtf8 = (encoding: unknown) =>
        encoding === undefined || (typeof encoding === 'string' && (encoding.toLowerCase() === 'utf8' || encoding.toLowerCase() === 'utf-8'));
    /** Node's `buf.toString('utf8', start, end)`: its bounds rules, then the decoder. */
    const utf8Slice = (buf: Uint8Array, start: unknown, end: unknown): string => {
        const len = buf.length;
        let s: number;
        if ((start as number) <= 0 || start === undefined) s = 0;
        else if ((start as number) >= len) return '';
        else s = Math.trunc(start as number) || 0;
        let e: number;
        if (end === undefined || (end as number) > len) e = len;
        else e = Math.trunc(end as number) || 0;
        if (e <= s) return '';
        return UTF8.decode(subarray.call(buf, s, e));
    };
    const urlToString = function (this: unknown, ...args: unknown[]) {
        if (isUtf8(args[0]) && this instanceof Uint8Array) return utf8Slice(this, args[1], args[2]);
        if (!isUrl(args[0])) return toString.apply(this, args);
        return toUrl(toString.call(this, 'base64', args[1], args[2]) as string);
    };
    put(Buffer.prototype, 'toString', urlToString);
    put(Buffer.prototype, 'toLocaleString', urlToString);
}

// ------ Globals Node has

// `globalThis.Buffer`, as in the original's sandbox (the bare name alone
// is replaced by esbuild's inject; code reading it off the global object,
// as some libraries and scripts do, found nothing).
Object.defineProperty(globalThis, 'Buffer', { configurable: true, writable: true, enumerable: false, value: Buffer });

// `URL.canParse` (Node 19.9+).
if (typeof globalThis.URL === 'function' && typeof (globalThis.URL as { canParse?: unknown }).canParse !== 'function') {
    Object.defineProperty(globalThis.URL, 'canParse', {
        configurable: true,
        writable: true,
        enumerable: false,
        value: function canParse(url: unknown, base?: unknown): boolean {
            try {
                new globalThis.URL(String(url), base === undefined ? undefined : String(base));
                return true;
            } catch {
                return false;
            }
        }
    });
}

// `atob`/`btoa` fail as Node's do: a `DOMException` named
// `InvalidCharacterError` (the engine threw a RangeError), with Node's
// messages.
{
    const invalid = (message: string): Error => {
        const D = (globalThis as { DOMException?: new (message: string, name: string) => Error }).DOMException;
        if (typeof D === 'function') {
            try {
                return new D(message, 'InvalidCharacterError');
            } catch {
                // An engine whose DOMException cannot be made: an Error below.
            }
        }
        const e = new Error(message);
        Object.defineProperty(e, 'name', { configurable: true, writable: true, enumerable: false, value: 'InvalidCharacterError' });
        return e;
    };
    const wrap = (name: 'atob' | 'btoa', message: string) => {
        const original = (globalThis as Record<string, unknown>)[name];
        if (typeof original !== 'function') return;
        const f = {
            [name](this: unknown, ...args: unknown[]) {
                try {
                    return (original as (...a: unknown[]) => unknown).apply(globalThis, args);
                } catch (e) {
                    if (e instanceof RangeError || (e instanceof Error && e.name === 'InvalidCharacterError')) throw invalid(message);
                    throw e;
                }
            }
        }[name]!;
        Object.defineProperty(globalThis, name, { configurable: true, writable: true, enumerable: true, value: f });
    };
    wrap('atob', 'The string to be decoded is not correctly encoded.');
    wrap('btoa', 'Invalid character');
}
