// `path` for test files written by hand (`sluice test`): POSIX paths, as
// the tests use them to find their recording next to them.

function normalize(path: string): string {
    const absolute = path.startsWith('/');
    const out: string[] = [];
    for (const part of path.split('/')) {
        if (part === '' || part === '.') continue;
        if (part === '..') {
            if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
            else if (!absolute) out.push('..');
            continue;
        }
        out.push(part);
    }
    const text = out.join('/');
    return absolute ? `/${text}` : text || '.';
}

export const sep = '/';

export function join(...parts: string[]): string {
    return normalize(parts.filter((p) => p !== '').join('/'));
}

export function resolve(...parts: string[]): string {
    let path = '';
    for (const p of parts) path = p.startsWith('/') ? p : path ? `${path}/${p}` : p;
    return normalize(path.startsWith('/') ? path : `/${path}`);
}

export function dirname(path: string): string {
    const n = normalize(path);
    const at = n.lastIndexOf('/');
    if (at < 0) return '.';
    return at === 0 ? '/' : n.slice(0, at);
}

export function basename(path: string, ext?: string): string {
    const n = normalize(path);
    const base = n.slice(n.lastIndexOf('/') + 1);
    return ext && base.endsWith(ext) && base !== ext ? base.slice(0, -ext.length) : base;
}

export function extname(path: string): string {
    const base = basename(path);
    const at = base.lastIndexOf('.');
    return at <= 0 ? '' : base.slice(at);
}

export default { sep, join, resolve, dirname, basename, extname };
