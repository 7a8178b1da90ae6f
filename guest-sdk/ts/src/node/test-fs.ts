// `fs` for test files written by hand (`sluice test`): the files the host
// read for the test (its recording), nothing else — a test has no
// filesystem in the sandbox.

import { resolve } from './test-path';

/** The files the host passed for the running test, by absolute path. */
const files = new Map<string, string>();

export function setTestFiles(entries: Record<string, string>): void {
    files.clear();
    for (const [path, text] of Object.entries(entries)) files.set(resolve(path), text);
}

function read(path: unknown): string {
    const p = resolve(String(path instanceof URL ? path.pathname : path));
    const text = files.get(p);
    if (text === undefined) {
        const e = new Error(`ENOENT: sluice test gives a test only its own recording, not ${p}`) as Error & { code: string };
        e.code = 'ENOENT';
        throw e;
    }
    return text;
}

export function readFileSync(path: unknown, _options?: unknown): string {
    return read(path);
}

export function existsSync(path: unknown): boolean {
    return files.has(resolve(String(path)));
}

export async function readFile(path: unknown, _options?: unknown): Promise<string> {
    return read(path);
}

export const promises = { readFile };

export default { readFileSync, existsSync, readFile, promises };
