import type { NangoAction } from '../../models';
import { createHash, createHmac, randomUUID } from 'crypto';
import { URL, URLSearchParams } from 'url';

export default async function runAction(): Promise<Record<string, unknown>> {
    const url = new URL('https://example.com/a/b?x=1');
    url.searchParams.set('y', '2');
    return {
        sha256: createHash('sha256').update('hello').digest('hex'),
        md5: createHash('md5').update('hello').digest('hex'),
        hmac: createHmac('sha256', 'key').update('message').digest('base64'),
        base64: Buffer.from('hello world').toString('base64'),
        decoded: Buffer.from('aGVsbG8=', 'base64').toString('utf8'),
        url: url.toString(),
        query: new URLSearchParams({ a: '1', b: 'two words' }).toString(),
        uuid: randomUUID().length,
        date: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)).toISOString(),
        timezoneOffset: new Date(2024, 5, 1).getTimezoneOffset(),
        // Node's `base64url` (JWTs, Gmail's `raw`), which npm's buffer lacks.
        base64url: Buffer.from('hello>>>???').toString('base64url'),
        fromBase64url: Buffer.from('aGVsbG8-Pj4_Pz8', 'base64url').toString(),
        base64urlLength: Buffer.byteLength('aGVsbG8-Pj4_Pz8', 'base64url'),
        base64urlIsEncoding: Buffer.isEncoding('base64url'),
        base64urlWrite: (() => {
            const b = Buffer.alloc(4);
            return [b.write('_-8', 1, 'base64url'), b.toString('hex')];
        })(),
        globalBuffer: (globalThis as { Buffer?: unknown }).Buffer === Buffer,
        canParse: [URL.canParse('https://example.com/x'), URL.canParse('not a url'), URL.canParse('/x', 'https://example.com')],
        // UTF-8 decoded as Node decodes it (WHATWG: one U+FFFD per
        // ill-formed subsequence), a BOM kept, Node's bounds.
        utf8: [
            Buffer.from([0xf0, 0x9f, 0x98]).toString(),
            Buffer.from([0x61, 0xff, 0x62, 0xe2, 0x82]).toString('utf8'),
            Buffer.from([0xef, 0xbb, 0xbf, 0x61]).toString(),
            Buffer.from('héllo').toString('utf-8', 1, 3),
            Buffer.from('héllo').toString('utf8', -1, 100),
            Buffer.from('héllo').toString('utf8', 4, 2)
        ].map((t) => [...t].map((c) => c.codePointAt(0))),
        // atob/btoa fail as Node's: an InvalidCharacterError.
        base64Errors: [() => atob('%'), () => btoa('ā')].map((f) => {
            try {
                f();
                return null;
            } catch (e) {
                const D = (globalThis as { DOMException?: any }).DOMException;
                return [(e as Error).name, (e as Error).message, e instanceof Error, typeof D === 'function' ? e instanceof D : true];
            }
        }),
        // setTimeout's Timeout: ref/unref/hasRef/refresh, a number by
        // Symbol.toPrimitive, and clearTimeout takes it or its number.
        timeout: await (async () => {
            const fired: string[] = [];
            const t = setTimeout(() => fired.push('t'), 1) as any;
            const shape = [t.unref() === t, t.hasRef(), t.ref().hasRef(), typeof +t, Number(t) > 0];
            clearTimeout(t);
            const n = setTimeout(() => fired.push('n'), 1) as any;
            clearTimeout(+n);
            const r = setTimeout(() => fired.push('r'), 1) as any;
            const c = setTimeout(() => fired.push('c'), 1) as any;
            c.close();
            await new Promise((resolve) => setTimeout(resolve, 5));
            // A timer that fired comes back; one cleared or closed does not.
            r.refresh();
            t.refresh();
            n.refresh();
            c.refresh();
            await new Promise((resolve) => setTimeout(resolve, 5));
            return { shape, fired };
        })()
    };
}
