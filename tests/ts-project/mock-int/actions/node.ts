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
        canParse: [URL.canParse('https://example.com/x'), URL.canParse('not a url'), URL.canParse('/x', 'https://example.com')]
    };
}
