// Node's `url` module as scripts use it: the WHATWG classes, and `parse`
// for the legacy object form.
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

export default { URL, URLSearchParams, parse, format };
