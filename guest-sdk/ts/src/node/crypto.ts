// Node's `crypto` module, the synchronous parts scripts use: hashes, HMACs
// and random values. Hashing runs in JavaScript (@noble/hashes); randomness
// comes from the host through the engine's Web Crypto.
import { Buffer } from 'buffer';
import { hmac } from '@noble/hashes/hmac.js';
import { md5, sha1 } from '@noble/hashes/legacy.js';
import { sha224, sha256, sha384, sha512 } from '@noble/hashes/sha2.js';

type Data = string | Uint8Array;

const HASHES: Record<string, typeof sha256> = {
    md5,
    sha1,
    sha224,
    sha256,
    sha384,
    sha512
};

function algorithm(name: string): typeof sha256 {
    const h = HASHES[name.toLowerCase().replace('-', '')];
    if (!h) throw new Error(`Digest method not supported: ${name}`);
    return h;
}

function bytes(data: Data, encoding?: string): Uint8Array {
    return typeof data === 'string' ? Buffer.from(data, (encoding ?? 'utf8') as BufferEncoding) : data;
}

function encode(out: Uint8Array, encoding?: string): any {
    const b = Buffer.from(out);
    return encoding ? b.toString(encoding as BufferEncoding) : b;
}

class Hash {
    private state: ReturnType<typeof sha256.create>;
    constructor(state: ReturnType<typeof sha256.create>) {
        this.state = state;
    }
    update(data: Data, encoding?: string): this {
        this.state.update(bytes(data, encoding));
        return this;
    }
    digest(encoding?: string): any {
        return encode(this.state.digest(), encoding);
    }
}

export function createHash(name: string): Hash {
    return new Hash(algorithm(name).create());
}

export function createHmac(name: string, key: Data): Hash {
    return new Hash(hmac.create(algorithm(name), bytes(key)) as unknown as ReturnType<typeof sha256.create>);
}

export function randomBytes(size: number): Buffer {
    const b = new Uint8Array(size);
    globalThis.crypto.getRandomValues(b);
    return Buffer.from(b);
}

export function randomUUID(): string {
    return globalThis.crypto.randomUUID();
}

export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
    if (a.length !== b.length) throw new RangeError('Input buffers must have the same byte length');
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
    return diff === 0;
}

export const webcrypto = globalThis.crypto;

export default { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual, webcrypto };
