// Node's `url` module as scripts use it: the WHATWG classes, `parse` for
// the legacy object form, and `file:` URLs to paths and back.
export const URL = globalThis.URL;
export const URLSearchParams = globalThis.URLSearchParams;

export function parse(input: string) {
    const u = new globalThis.URL(input);
    return {
        protocol: u.protocol,
        host: u.host,
        hostname: u.hostname,
        port: u.port || null,
        pathname: u.pathname,
        search: u.search || null,
        query: u.search ? u.search.slice(1) : null,
        hash: u.hash || null,
        href: u.href,
        path: u.pathname + u.search
    };
}

export function format(u: URL | string): string {
    return String(u);
}

/** A `file:` URL's path (tests find their recordings with it). */
export function fileURLToPath(u: URL | string): string {
    const url = new globalThis.URL(String(u));
    if (url.protocol !== 'file:') throw new TypeError(`The URL must be of scheme file: ${String(u)}`);
    return decodeURIComponent(url.pathname);
}

export function pathToFileURL(path: string): URL {
    return new globalThis.URL(`file://${encodeURI(path)}`);
}

export default { URL, URLSearchParams, parse, format, fileURLToPath, pathToFileURL };
