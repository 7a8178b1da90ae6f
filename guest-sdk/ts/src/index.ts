// sluice's TypeScript SDK: the original platform's `NangoAction` and
// `NangoSync` over the nango:scripts imports (wit/nango.wit). Everything a
// language would otherwise re-implement (URL building, credentials, retries,
// pagination state, record semantics) happens in the host; this file only
// translates between JavaScript values and the WIT shapes.

import { Buffer } from 'buffer';
import * as http from 'nango:scripts/http@0.2.0';
import * as logging from 'nango:scripts/log@0.2.0';
import * as conn from 'nango:scripts/connection@0.2.0';
import * as records from 'nango:scripts/records@0.2.0';
import * as syncContext from 'nango:scripts/sync-context@0.2.0';
import './codegen';
import './intl';
import { prewarm } from './prewarm';
import { runTestBytes, scopeOf } from './harness';

// ------ Types: the original's names and shapes, declared once in
// models-sdk.d.ts (which `sluice generate` also writes into models.ts).

import type { AxiosResponse, EnvironmentVariable, MergingStrategy, ProxyConfiguration } from '../models-sdk';
export type {
    AxiosResponse,
    CursorPagination,
    EnvironmentVariable,
    HttpMethod,
    LinkPagination,
    MergingStrategy,
    OffsetPagination,
    Pagination,
    ProxyConfiguration,
    RecordMetadata
} from '../models-sdk';

// ------ JSON and text cross the boundary as UTF-8 bytes

// componentize-js lowers a string argument by counting its UTF-8 length one
// character at a time in interpreted JavaScript (wit/nango.wit, `json`);
// TextEncoder and TextDecoder are native code.
const UTF8_OUT = new TextEncoder();
const UTF8_IN = new TextDecoder();

function utf8(text: string): Uint8Array {
    const bytes = UTF8_OUT.encode(text);
    // Near the memory limit the engine's encoder answers an empty array
    // instead of throwing: a request body or a batch would go out empty.
    if (bytes.length === 0 && text.length > 0) {
        throw new RangeError(`out of memory: ${text.length} characters could not be encoded (the script is at its memory limit)`);
    }
    return bytes;
}

/** `JSON.stringify` as bytes; `undefined` when there is nothing to serialize. */
function jsonBytes(value: unknown, replacer?: (key: string, value: unknown) => unknown): Uint8Array | undefined {
    const text = JSON.stringify(value, replacer);
    return text === undefined ? undefined : utf8(text);
}

function fromJson(bytes: Uint8Array): any {
    return JSON.parse(UTF8_IN.decode(bytes));
}

// ------ Errors

/** `throw new nango.ActionError(payload)`: the caller receives `payload`. */
export class ActionError<T = Record<string, unknown>> extends Error {
    type = 'action_script_runtime_error';
    payload?: T;
    constructor(payload?: T) {
        const message = payload && typeof (payload as any).message === 'string' ? (payload as any).message : 'action_script_runtime_error';
        super(message);
        this.name = 'ActionError';
        this.payload = payload;
    }
}

/** An SDK error: `code` is one of the original's (`script_aborted`, ...) or sluice's (`egress_denied`, ...). */
export class SDKError extends Error {
    code: string;
    payload?: unknown;
    constructor(code: string, message: string, payload?: unknown) {
        super(message);
        this.name = 'SDKError';
        this.code = code;
        this.payload = payload;
    }
}

const RAW = Symbol('sluice.raw');
/** The method that drops an imported resource (componentize-js's bindings). */
const DISPOSE: symbol = (Symbol as { dispose?: symbol }).dispose ?? Symbol.for('dispose');

/** A failed request, shaped like the Axios error the original throws. */
export class AxiosError extends Error {
    isAxiosError = true;
    code?: string;
    config: ProxyConfiguration;
    status?: number;
    response?: AxiosResponse;
    [RAW]: http.HttpError;
    constructor(message: string, code: string | undefined, config: ProxyConfiguration, raw: http.HttpError, response?: AxiosResponse) {
        super(message);
        this.name = 'AxiosError';
        this.code = code;
        this.config = config;
        this.response = response;
        this.status = response?.status;
        this[RAW] = raw;
    }
    toJSON() {
        return { message: this.message, name: this.name, code: this.code, status: this.status };
    }
}

/** The err value of a failed WIT import (componentize-js throws it as `payload`). */
function errPayload<T>(e: unknown): T | undefined {
    return e && typeof e === 'object' ? ((e as { payload?: T }).payload as T | undefined) : undefined;
}

function sdkError(e: unknown): unknown {
    const p = errPayload<http.NangoError>(e);
    if (p && typeof p === 'object' && typeof p.code === 'string') {
        return new SDKError(p.code, p.message, p.payload === undefined ? undefined : parseJson(UTF8_IN.decode(p.payload)));
    }
    return e;
}

/** Runs an import, turning its `nango-error` into an `SDKError`. */
function call<T>(f: () => T): T {
    try {
        return f();
    } catch (e) {
        throw sdkError(e);
    }
}

function parseJson(text: string): unknown {
    try {
        return JSON.parse(text);
    } catch {
        return text;
    }
}

// ------ HTTP

function headersObject(pairs: [string, string][]): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of pairs) {
        // Axios gives `set-cookie` as a list; the host keeps each apart.
        if (k === 'set-cookie') {
            const list = out[k];
            out[k] = Array.isArray(list) ? [...list, v] : [v];
        } else {
            out[k] = v;
        }
    }
    return out;
}

function responseData(body: Uint8Array, responseType: ProxyConfiguration['responseType']): unknown {
    if (responseType === 'arraybuffer' || responseType === 'stream' || responseType === 'blob') {
        return Buffer.from(body);
    }
    const text = UTF8_IN.decode(body);
    if (responseType === 'text' || responseType === 'document') return text;
    if (text.length === 0) return '';
    return parseJson(text);
}

function toAxios(r: http.Response, config: ProxyConfiguration): AxiosResponse {
    return {
        data: responseData(r.body, config.responseType),
        status: r.status,
        // axios's is the answer's reason phrase: the standard one here.
        statusText: STATUS_TEXT[r.status] ?? '',
        headers: headersObject(r.headers),
        config,
        request: {}
    };
}

const METHODS = new Set(['get', 'post', 'put', 'patch', 'delete']);

function isBinary(data: unknown): data is Uint8Array | ArrayBuffer {
    return data instanceof Uint8Array || data instanceof ArrayBuffer;
}

/** `undefined` values become `null` (dropped from the query, kept in mock identities). */
function keepUndefined(_key: string, value: unknown): unknown {
    return value === undefined ? null : value;
}

function toRequest(config: ProxyConfiguration, method?: string, replaying = false): http.Request {
    if (!config || typeof config !== 'object') {
        throw new SDKError('invalid_request', 'a proxy configuration object is required');
    }
    const m = String(method ?? config.method ?? 'get').toLowerCase();
    if (!METHODS.has(m)) {
        throw new SDKError('invalid_request', `unsupported HTTP method ${String(method ?? config.method)}`);
    }
    // As axios: a header whose value is undefined, null or false is not sent.
    const headers: [string, string][] = Object.entries(config.headers ?? {})
        .filter(([, v]) => v !== undefined && v !== null && v !== false)
        .map(([k, v]) => [k, String(v)]);
    let params: http.Query | undefined;
    if (typeof config.params === 'string') {
        params = { tag: 'text', val: config.params };
    } else if (config.params && typeof config.params === 'object') {
        params = { tag: 'object', val: jsonBytes(config.params, keepUndefined)! };
    }
    let data: http.Body | undefined;
    const d = config.data;
    if (d) {
        const contentType = headers.find(([k]) => k.toLowerCase() === 'content-type')?.[1];
        if (typeof d === 'string') {
            data = { tag: 'text', val: utf8(d) };
        } else if (isBinary(d)) {
            data = { tag: 'bytes', val: d instanceof Uint8Array ? d : new Uint8Array(d) };
        } else if (d instanceof URLSearchParams && !replaying) {
            // (Replaying, it stays what the original harness identifies it
            // by: its JSON, `{}`.)
            // As axios: the form's text, typed as a form unless the script typed it.
            if (contentType === undefined) headers.push(['Content-Type', 'application/x-www-form-urlencoded;charset=utf-8']);
            data = { tag: 'text', val: utf8(d.toString()) };
        } else if (contentType === 'multipart/form-data' && typeof d === 'object') {
            data = { tag: 'multipart', val: Object.entries(d as Record<string, unknown>).map(([k, v]) => [k, String(v)]) };
        } else {
            // An object typed as a form is sent as JSON: the host encodes
            // it as axios does (the recording harness identifies it by its
            // JSON, as the original's).
            const json = jsonBytes(d);
            if (json) data = { tag: 'json', val: json };
        }
    }
    return {
        method: m as http.Method,
        endpoint: text('endpoint', config.endpoint) ?? '',
        headers,
        params,
        data,
        retries: retryCount(config.retries),
        retryOn: (config.retryOn ?? []).map(statusCode),
        retryHeader: config.retryHeader
            ? { at: text('retryHeader.at', config.retryHeader.at), after: text('retryHeader.after', config.retryHeader.after) }
            : undefined,
        baseUrlOverride: text('baseUrlOverride', config.baseUrlOverride),
        decompress: config.decompress === true || config.decompress === 'true',
        providerConfigKey: text('providerConfigKey', config.providerConfigKey),
        connectionId: text('connectionId', config.connectionId)
    };
}

/** A configuration field that is text: a number is taken as its text,
 * anything else is refused naming the field (the bindings said only
 * "expected a string, received [number]"). */
function text(field: string, value: unknown): string | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value === 'string') return value;
    if (typeof value === 'number') return String(value);
    throw new SDKError('invalid_request', `${field} must be a string, got ${typeof value}`);
}

/** One of `retryOn`: an HTTP status code. */
function statusCode(value: unknown): number {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 100 || n > 599) {
        throw new SDKError('invalid_request', `retryOn must list HTTP status codes, got ${JSON.stringify(value) ?? String(value)}`);
    }
    return n;
}

/** `retries` as the host takes it: a negative, fractional or non-numeric
 * count is the original's (no retry below 1, whole attempts), not a
 * 32-bit wrap-around (`-1` meant four billion retries). */
function retryCount(value: unknown): number {
    const n = Math.floor(Number(value ?? 0));
    return Number.isFinite(n) && n > 0 ? Math.min(n, 0xffffffff) : n === Infinity ? 0xffffffff : 0;
}

/** The error the original throws for a failed request. */
function httpError(e: unknown, config: ProxyConfiguration): unknown {
    const p = errPayload<http.HttpError>(e);
    if (!p || typeof p !== 'object' || !('tag' in p)) return e;
    if (p.tag === 'status') {
        const response = toAxios(p.val, config);
        const code = p.val.status >= 500 ? 'ERR_BAD_RESPONSE' : 'ERR_BAD_REQUEST';
        return new AxiosError(`Request failed with status code ${p.val.status}`, code, config, p, response);
    }
    const err = p.val;
    if (err.code === 'script_network_error') {
        const code = /^[A-Z_]+/.exec(err.message)?.[0];
        return new AxiosError(err.message, code, config, p);
    }
    return new SDKError(err.code, err.message, err.payload === undefined ? undefined : parseJson(UTF8_IN.decode(err.payload)));
}

// ------ uncontrolledFetch's request, as fetch reads it

/** A fetch `headers` init — an object, `[name, value]` pairs or a `Headers` — as its pairs. */
function fetchHeaders(init: unknown): [string, string][] {
    if (init === undefined || init === null) return [];
    if (typeof Headers === 'function') {
        let headers: Headers;
        try {
            headers = new Headers(init as ConstructorParameters<typeof Headers>[0]);
        } catch (e) {
            throw new SDKError('invalid_request', `uncontrolledFetch: invalid headers: ${e instanceof Error ? e.message : String(e)}`);
        }
        const out: [string, string][] = [];
        headers.forEach((value, name) => out.push([name, value]));
        return out;
    }
    if (typeof (init as Iterable<unknown>)[Symbol.iterator] === 'function') {
        return Array.from(init as Iterable<[unknown, unknown]>, ([k, v]) => [String(k), String(v)]);
    }
    return Object.entries(init as Record<string, unknown>).map(([k, v]) => [k, String(v)]);
}

/** `body` as bytes, with fetch's content type for its kind unless `headers` has one. */
async function fetchBody(body: unknown, headers: [string, string][]): Promise<Uint8Array | undefined> {
    if (body === undefined || body === null) return undefined;
    const typed = (type: string) => {
        if (!headers.some(([name]) => name.toLowerCase() === 'content-type')) headers.push(['content-type', type]);
    };
    if (typeof body === 'string') {
        typed('text/plain;charset=UTF-8');
        return utf8(body);
    }
    if (body instanceof URLSearchParams) {
        typed('application/x-www-form-urlencoded;charset=UTF-8');
        return utf8(body.toString());
    }
    if (body instanceof ArrayBuffer) return new Uint8Array(body.slice(0));
    if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength).slice();
    if (typeof FormData === 'function' && body instanceof FormData) return multipart(body, typed);
    if (typeof Blob === 'function' && body instanceof Blob) {
        if (body.type) typed(body.type);
        return new Uint8Array(await body.arrayBuffer());
    }
    if (typeof ReadableStream === 'function' && body instanceof ReadableStream) {
        throw new SDKError(
            'invalid_request',
            'uncontrolledFetch: a ReadableStream body cannot be sent; pass a string, bytes, URLSearchParams, a Blob or FormData'
        );
    }
    // Anything else is its text, as fetch sends it.
    typed('text/plain;charset=UTF-8');
    return utf8(String(body));
}

/** `form` as fetch encodes `multipart/form-data` (undici's escapes and line breaks). */
async function multipart(form: FormData, typed: (type: string) => void): Promise<Uint8Array> {
    const boundary = `----formdata-sluice-${String(Math.random()).slice(2, 13).padStart(11, '0')}`;
    const escape = (text: string) => text.replace(/\n/g, '%0A').replace(/\r/g, '%0D').replace(/"/g, '%22');
    const lines = (text: string) => text.replace(/\r(?!\n)|(?<!\r)\n/g, '\r\n');
    const parts: Uint8Array[] = [];
    for (const [name, value] of form as unknown as Iterable<[string, string | Blob]>) {
        const head = `--${boundary}\r\nContent-Disposition: form-data; name="${escape(lines(name))}"`;
        if (typeof value === 'string') {
            parts.push(utf8(`${head}\r\n\r\n${lines(value)}\r\n`));
        } else {
            const filename = (value as Blob & { name?: string }).name ?? 'blob';
            parts.push(utf8(`${head}; filename="${escape(filename)}"\r\nContent-Type: ${value.type || 'application/octet-stream'}\r\n\r\n`));
            parts.push(new Uint8Array(await value.arrayBuffer()));
            parts.push(utf8('\r\n'));
        }
    }
    parts.push(utf8(`--${boundary}--\r\n`));
    typed(`multipart/form-data; boundary=${boundary}`);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
        out.set(p, at);
        at += p.length;
    }
    return out;
}

// ------ Logging

const LEVELS: Record<string, logging.Level> = {
    debug: 'debug',
    verbose: 'debug',
    silly: 'debug',
    info: 'info',
    http: 'info',
    warn: 'warn',
    error: 'error'
};

/** JSON with cycles and depth cut, for log messages and payloads. */
function safeStringify(value: unknown): string {
    const seen = new WeakSet<object>();
    const out = JSON.stringify(value, function (this: unknown, _key, v) {
        if (v instanceof Error) {
            return { name: v.name, message: v.message, ...(v as any) };
        }
        if (typeof v === 'bigint') return v.toString();
        if (v && typeof v === 'object') {
            if (seen.has(v)) return '[Circular]';
            seen.add(v);
        }
        return v;
    });
    return out === undefined ? String(value) : out;
}

// ------ The helper objects

type Script = {
    default?: unknown;
    onWebhookPayloadReceived?: unknown;
};

/** What `createSync`, `createAction` and `createOnEvent` return. */
type Definition = {
    type?: string;
    exec?: (...args: any[]) => unknown;
    onWebhook?: (...args: any[]) => unknown;
};

/** What every script receives: the original's `NangoAction`. */
export class NangoAction {
    readonly connectionId: string;
    readonly providerConfigKey: string;
    readonly provider?: string;
    readonly environmentName: string;
    readonly activityLogId: string;
    readonly scriptName: string;
    /** The host answers from recorded mocks (`sluice test`). */
    private readonly replaying: boolean;
    readonly dryRun = false;
    readonly runnerFlags = {};
    readonly ActionError = ActionError;

    constructor() {
        const i = conn.info();
        this.connectionId = i.connectionId;
        this.providerConfigKey = i.providerConfigKey;
        this.provider = i.provider;
        this.environmentName = i.environmentName;
        this.activityLogId = i.activityLogId;
        this.scriptName = i.scriptName;
        this.replaying = i.replaying;
    }

    private signal?: unknown;
    /**
     * The original's `abortSignal`. Never aborted here: an execution past its
     * limits is stopped by the host, wherever the script is, rather than
     * asked to stop at its next SDK call. Made when first read.
     */
    get abortSignal(): AbortSignal {
        if (this.signal === undefined) {
            this.signal =
                typeof AbortController === 'function'
                    ? new AbortController().signal
                    : {
                          aborted: false,
                          reason: undefined,
                          onabort: null,
                          throwIfAborted() {},
                          addEventListener() {},
                          removeEventListener() {},
                          dispatchEvent: () => false
                      };
        }
        return this.signal as AbortSignal;
    }

    async proxy<T = any>(config: ProxyConfiguration): Promise<AxiosResponse<T>> {
        return this.send<T>(config);
    }
    async get<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>> {
        return this.send<T>(config as ProxyConfiguration, 'get');
    }
    async post<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>> {
        return this.send<T>(config as ProxyConfiguration, 'post');
    }
    async put<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>> {
        return this.send<T>(config as ProxyConfiguration, 'put');
    }
    async patch<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>> {
        return this.send<T>(config as ProxyConfiguration, 'patch');
    }
    async delete<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>> {
        return this.send<T>(config as ProxyConfiguration, 'delete');
    }

    private send<T>(config: ProxyConfiguration, method?: string): AxiosResponse<T> {
        const req = toRequest(config, method, this.replaying);
        let r: http.Response;
        try {
            r = http.proxy(req);
        } catch (e) {
            throw httpError(e, config);
        }
        return toAxios(r, config) as AxiosResponse<T>;
    }

    /** Pages of results; the host keeps the cursor, link or offset. */
    async *paginate<T = any>(config: ProxyConfiguration): AsyncGenerator<T[], undefined, void> {
        const req = toRequest(config, undefined, this.replaying);
        const settings = config.paginate ? jsonBytes(config.paginate) : undefined;
        let pages: http.Paginator;
        try {
            pages = http.paginate(req, settings);
        } catch (e) {
            throw httpError(e, config);
        }
        try {
            yield* this.pagesOf<T>(pages, config);
        } finally {
            // Read to its end, or its loop left: the host lets go of the
            // request it holds (it bounds what open paginators hold).
            (pages as unknown as Record<symbol, (() => void) | undefined>)[DISPOSE]?.();
        }
        return undefined;
    }

    private async *pagesOf<T>(pages: http.Paginator, config: ProxyConfiguration): AsyncGenerator<T[], undefined, void> {
        for (;;) {
            let page: http.Page | undefined;
            try {
                page = pages.nextPage();
            } catch (e) {
                throw httpError(e, config);
            }
            if (page === undefined) return undefined;
            const items = fromJson(page.items) as T[];
            const onPage = (config.paginate as { on_page?: unknown } | undefined)?.on_page;
            // As the original: `on_page` runs once the script has taken the
            // page and asks for the next (a script that saves its resume
            // point there has saved the page first).
            // The host gives no page response when `on_page` is not called
            // (an offset pagination's last, short page) or when it replays
            // a recording (then the page's own next parameter is given).
            let seen: { nextPageParam: unknown; response: unknown } | undefined;
            if (typeof onPage === 'function') {
                const last = pages.lastPage();
                if (last) {
                    seen = { nextPageParam: fromJson(last.nextPageParam) ?? undefined, response: toAxios(last.response, config) };
                } else if (this.replaying) {
                    seen = { nextPageParam: page.next, response: undefined };
                }
            }
            yield items;
            if (seen && typeof onPage === 'function') await onPage(seen);
        }
    }

    /**
     * A request as the script writes it, to an absolute URL: no credentials,
     * provider headers or retries, the same egress check as every request.
     * Headers and body are read as fetch reads them (a `Headers`, pairs or
     * an object; a string, bytes, `URLSearchParams`, a `Blob` or
     * `FormData`, typed as fetch types them), and fetch's `Accept: *\/*`
     * is sent unless the script gives one. Resolves to a fetch-like
     * `Response` whatever the status.
     */
    async uncontrolledFetch(options: {
        url: URL | string;
        method?: string;
        headers?: Record<string, string> | [string, string][] | Headers;
        body?: string | Uint8Array | ArrayBuffer | ArrayBufferView | URLSearchParams | Blob | FormData | null;
    }): Promise<FetchResponse> {
        const url = String(options?.url ?? '');
        const method = String(options?.method ?? 'GET').toLowerCase();
        if (!METHODS.has(method)) {
            throw new SDKError('invalid_request', `uncontrolledFetch: unsupported HTTP method ${String(options?.method)}`);
        }
        const headers = fetchHeaders(options?.headers);
        const body = await fetchBody(options?.body, headers);
        const r = call(() => http.uncontrolledFetch({ url, method: method as http.Method, headers, body }));
        return new FetchResponse(url, r);
    }

    private integrations = new Map<string, { at: number; value: unknown }>();
    /** This script's integration (`include`: `webhook`, `credentials`), kept 10 minutes. */
    async getIntegration(queries?: { include?: string[] }): Promise<any> {
        const include = [...(queries?.include ?? [])].map(String).sort();
        const key = include.join(',');
        const hit = this.integrations.get(key);
        if (hit && Date.now() - hit.at < 600_000) return hit.value;
        const value = fromJson(call(() => conn.getIntegration(include)));
        this.integrations.set(key, { at: Date.now(), value });
        return value;
    }

    private scriptLogLevel: string | undefined;
    /**
     * `setLogger({level})`: lines below `level` are not kept (`off`: none).
     * The environment's NANGO_LOGGER_LEVEL applies as well (in the original
     * this one wins over it).
     */
    setLogger(logger: { level: 'debug' | 'info' | 'warn' | 'error' | 'off' }): void {
        this.scriptLogLevel = logger?.level;
    }

    async log(...args: unknown[]): Promise<void> {
        let count = args.length;
        if (count === 0) return;
        let level: logging.Level = 'info';
        const last = args[count - 1];
        if (last && typeof last === 'object' && !Array.isArray(last) && 'level' in last) {
            level = LEVELS[String((last as { level: unknown }).level)] ?? 'info';
            count--;
        }
        const below = LOG_RANKS[this.scriptLogLevel ?? 'debug'];
        if (below !== undefined && (LOG_RANKS[level] ?? 1) < below) return;
        // Indexing, not destructuring: an interpreter runs the iterator protocol for that.
        // A level object alone leaves no message (the original logs `undefined`).
        const message = count > 0 ? args[0] : undefined;
        const payload = count > 1 ? args[1] : undefined;
        const text = typeof message === 'string' ? message : safeStringify(message);
        let meta: Uint8Array | undefined;
        if (payload !== undefined) {
            meta = utf8(safeStringify(Array.isArray(payload) ? Object.assign({}, payload) : payload));
        }
        logging.log(level, utf8(text), meta);
    }

    async getConnection(
        providerConfigKeyOverride?: string,
        connectionIdOverride?: string,
        options?: { refreshToken?: boolean; refreshGithubAppJwtToken?: boolean; forceRefresh?: boolean }
    ): Promise<any> {
        // As the original's, an empty override is none.
        const pck = providerConfigKeyOverride || undefined;
        const cid = connectionIdOverride || undefined;
        const force = Boolean(options?.forceRefresh || options?.refreshGithubAppJwtToken);
        const refreshToken = Boolean(options?.refreshToken);
        if (force || refreshToken) {
            return fromJson(call(() => conn.getConnectionWith(pck, cid, force, refreshToken)));
        }
        return fromJson(call(() => conn.getConnection(pck, cid)));
    }
    // As the original's: OAuth2's access token, OAuth1's token and
    // secret (`{oAuthToken, oAuthTokenSecret}`, for a script that signs
    // its own requests), else the credentials.
    async getToken(): Promise<any> {
        const c = await this.getConnection();
        const creds = c?.credentials ?? {};
        if (creds.type === 'OAUTH2') return creds.access_token;
        if (creds.type === 'OAUTH1') return { oAuthToken: creds.oauth_token, oAuthTokenSecret: creds.oauth_token_secret };
        return creds;
    }
    async getMetadata<T = Record<string, unknown>>(): Promise<T> {
        return fromJson(call(() => conn.getMetadata())) as T;
    }
    async setMetadata(metadata: Record<string, any>): Promise<void> {
        call(() => conn.setMetadata(jsonBytes(metadata) ?? utf8('null')));
    }
    async updateMetadata(metadata: Record<string, any>): Promise<void> {
        call(() => conn.updateMetadata(jsonBytes(metadata) ?? utf8('null')));
    }
    /** @deprecated use setMetadata */
    async setFieldMapping(fieldMapping: Record<string, string>): Promise<void> {
        return this.setMetadata(fieldMapping);
    }
    /** @deprecated use getMetadata */
    async getFieldMapping(): Promise<Record<string, unknown>> {
        const m = await this.getMetadata<Record<string, unknown>>();
        return (m?.['fieldMapping'] as Record<string, unknown>) ?? {};
    }
    async getEnvironmentVariables(): Promise<EnvironmentVariable[] | null> {
        return call(() => conn.getEnvironmentVariables()).map(({ name, value }) => ({ name, value }));
    }
    async getWebhookURL(): Promise<string | null | undefined> {
        return call(() => conn.getWebhookUrl());
    }
    async triggerAction<In = unknown, Out = unknown>(providerConfigKey: string, connectionId: string, actionName: string, input?: In): Promise<Out> {
        const out = call(() => conn.triggerAction(providerConfigKey, connectionId, actionName, jsonBytes(input)));
        return (out === undefined ? undefined : fromJson(out)) as Out;
    }
    /**
     * Runs a sync of a connection now, as `POST /sync/trigger` (the body the
     * original's SDK sends: a boolean mode is `full_refresh` or
     * `incremental`, an object is `opts`). A server's only: elsewhere it is
     * logged and runs nothing. A refusal throws the API's error code.
     */
    async triggerSync(
        providerConfigKey: string,
        connectionId: string,
        sync: string | { name: string; variant: string },
        optsOrSyncMode?: { reset?: boolean; emptyCache?: boolean } | 'incremental' | 'full_refresh' | 'full_refresh_and_clear_cache' | boolean
    ): Promise<void> {
        const common = { syncs: [sync], provider_config_key: providerConfigKey, connection_id: connectionId };
        let body: Record<string, unknown>;
        if (typeof optsOrSyncMode === 'string' || typeof optsOrSyncMode === 'boolean') {
            const mode = typeof optsOrSyncMode === 'boolean' ? (optsOrSyncMode ? 'full_refresh' : 'incremental') : optsOrSyncMode;
            body = { ...common, sync_mode: mode };
        } else {
            body = { ...common, opts: optsOrSyncMode !== undefined && typeof optsOrSyncMode === 'object' ? optsOrSyncMode : undefined };
        }
        call(() => conn.triggerSync(jsonBytes(body)!));
    }
    /** A sync's attributes; an action has none, and throws as the original's does. */
    getFlowAttributes<A = object>(): A | null {
        throw new Error('There is no current sync to get attributes from');
    }
    /** Un-pauses syncs of the integration (one connection's, or all), as `POST /sync/start`. */
    async startSync(providerConfigKey: string, syncs: (string | { name: string; variant: string })[], connectionId?: string): Promise<void> {
        if (!providerConfigKey) throw new Error('Provider Config Key is required');
        if (!syncs) throw new Error('Sync is required');
        if (!Array.isArray(syncs)) throw new Error('Syncs must be an array of strings. If it is a single sync, please wrap it in an array.');
        call(() => conn.startSync(jsonBytes({ syncs, provider_config_key: providerConfigKey, connection_id: connectionId })!));
    }
    async zodValidateInput<T = any, Z = any>({ zodSchema, input }: { zodSchema: Z; input: T }): Promise<any> {
        if (this.replaying) {
            // The original's test harness, whose recordings `sluice test`
            // replays, does not validate.
            return { success: true, data: input };
        }
        const parsed = (zodSchema as any).safeParse(input);
        if (!parsed.success) {
            for (const issue of parsed.error.issues) {
                await this.log(`Invalid input provided: ${issue.message} at path ${issue.path.join('.')}`, { level: 'error' });
            }
            throw new ActionError({ message: 'Invalid input provided' });
        }
        return parsed;
    }
    /**
     * A lock of the environment, shared by all its executions (as the
     * original's): false while another execution holds `key`; released by
     * `releaseLock`, when `ttlMs` runs out, or when this execution ends.
     */
    async tryAcquireLock({ key, ttlMs }: { key: string; ttlMs: number }): Promise<boolean> {
        if (typeof key !== 'string' || key.length === 0 || key.length > 255) {
            throw new Error('Invalid lock key (must be between 1 and 255 characters)');
        }
        if (typeof ttlMs !== 'number' || !(ttlMs > 0)) {
            throw new Error('Invalid lock TTL (must be greater than 0)');
        }
        const ms = BigInt(Math.min(Math.ceil(ttlMs), Number.MAX_SAFE_INTEGER));
        return call(() => conn.tryAcquireLock(key, ms));
    }
    async releaseLock({ key }: { key: string }): Promise<boolean> {
        return call(() => conn.releaseLock(String(key)));
    }
    async releaseAllLocks(): Promise<void> {
        conn.releaseAllLocks();
    }
}

/** What syncs and webhook handlers receive: the original's `NangoSync`. */
export class NangoSync extends NangoAction {
    readonly lastSyncDate?: Date;
    readonly variant: string;
    readonly track_deletes: boolean;

    constructor() {
        super();
        const last = syncContext.lastSyncDate();
        this.lastSyncDate = last === undefined ? undefined : new Date(last);
        this.variant = syncContext.variant();
        this.track_deletes = syncContext.trackDeletes();
    }

    /** The sync's attributes: sluice's deploys set none, so `{}`. */
    override getFlowAttributes<A = object>(): A | null {
        return {} as A;
    }

    modelFullName(model: string): string {
        return this.variant === 'base' ? model : `${model}::${this.variant}`;
    }

    async batchSave<T = any>(results: T[], model: string): Promise<boolean | null> {
        return this.write(records.batchSave, results, model);
    }
    /** @deprecated use batchSave */
    async batchSend<T = any>(results: T[], model: string): Promise<boolean | null> {
        return this.batchSave(results, model);
    }
    async batchDelete<T = any>(results: T[], model: string): Promise<boolean | null> {
        return this.write(records.batchDelete, results, model);
    }
    async batchUpdate<T = any>(results: T[], model: string): Promise<boolean | null> {
        return this.write(records.batchUpdate, results, model);
    }

    private write(f: (model: string, json: Uint8Array) => void, results: unknown[], model: string): boolean | null {
        if (!results || results.length === 0) return true;
        for (const r of results) {
            if (r && typeof r === 'object') delete (r as Record<string, unknown>)['_nango_metadata'];
        }
        // The host takes at most 100,000 records per call and commits every
        // 1,000 on their own: parts of 10,000 change no commit.
        for (let i = 0; i < results.length; i += 10000) {
            const part = i === 0 && results.length <= 10000 ? results : results.slice(i, i + 10000);
            call(() => f(model, utf8(JSON.stringify(part))));
        }
        // The model's merging strategy is set from here on (the host's too).
        this.mergingSet.add(model);
        return true;
    }

    /** Every stored record of `model` for this connection, oldest change first. */
    async *listRecords<T = any>(model: string, options?: { cursor?: string | null }): AsyncGenerator<T, void, undefined> {
        let cursor = options?.cursor ?? undefined;
        for (;;) {
            const page = call(() => records.listRecords(model, cursor, 100));
            for (const r of fromJson(page.records) as T[]) yield r;
            if (!page.nextCursor) return;
            cursor = page.nextCursor;
        }
    }

    async getRecordsByIds<K = string | number, T = any>(ids: K[], model: string): Promise<Map<K, T>> {
        const byString = new Map<string, K>();
        for (const id of ids) byString.set(String(id), id);
        // In parts of 10,000 ids: the host takes at most 100,000 a call.
        const keys = [...byString.keys()];
        const out = new Map<K, T>();
        for (let i = 0; i < keys.length || i === 0; i += 10_000) {
            const part = keys.slice(i, i + 10_000);
            const found = fromJson(call(() => records.getRecordsByIds(model, utf8(JSON.stringify(part))))) as Record<string, unknown>[];
            for (const r of found) {
                const key = byString.get(String(r['id']));
                if (key !== undefined) out.set(key, r as T);
            }
        }
        return out;
    }

    private readonly mergingSet = new Set<string>();
    async setMergingStrategy(merging: { strategy: MergingStrategy }, model: string): Promise<void> {
        const given = merging?.strategy as string;
        const known = given === 'ignore_if_modified_after' || given === 'override';
        // As the original's: a model whose strategy is set keeps it (the
        // host says so), whatever is asked; else an unknown one throws.
        if (!known && !this.mergingSet.has(model)) {
            throw new Error(`Unsupported merging strategy: ${given}`);
        }
        const strategy = given === 'ignore_if_modified_after' ? 'ignore-if-modified-after' : 'override';
        call(() => records.setMergingStrategy(model, strategy));
        this.mergingSet.add(model);
    }

    /** The checkpoint this sync saved last for this connection, or `null`. */
    async getCheckpoint<T = Record<string, string | number | boolean>>(): Promise<T | null> {
        const out = call(() => records.getCheckpoint());
        return out === undefined ? null : (fromJson(out) as T);
    }
    /** Replaces the checkpoint (a flat object of strings, numbers and booleans), durably. */
    async saveCheckpoint(checkpoint: Record<string, string | number | boolean>): Promise<void> {
        call(() => records.saveCheckpoint(jsonBytes(checkpoint) ?? utf8('null')));
    }
    async clearCheckpoint(): Promise<void> {
        call(() => records.clearCheckpoint());
    }

    /**
     * The sync refreshes every record of `model` from here on, until
     * trackDeletesEnd — in this run or a later one (a sync resuming from
     * its checkpoint), as the original's: a start made stands, another
     * changes nothing.
     */
    async trackDeletesStart(model: string): Promise<void> {
        call(() => records.trackDeletesStart(model));
    }
    /**
     * After trackDeletesStart: the model's records no run saved since the
     * start are deleted when this run succeeds (sluice deletes them then,
     * so none is deleted yet and `deletedKeys` is empty; the run's results
     * count them). A sync's run without a start throws, as the original's.
     */
    async trackDeletesEnd(model: string): Promise<{ deletedKeys: string[] }> {
        call(() => records.trackDeletesEnd(model));
        return { deletedKeys: [] };
    }
    /**
     * @deprecated use trackDeletesStart/trackDeletesEnd. The model's records
     * this run did not save are deleted when it succeeds.
     */
    async deleteRecordsFromPreviousExecutions(model: string): Promise<{ deletedKeys: string[] }> {
        call(() => records.trackDeletesStart(model));
        return this.trackDeletesEnd(model);
    }
}

// ------ uncontrolledFetch's answer

const LOG_RANKS: Record<string, number> = { debug: 0, info: 1, warn: 2, error: 3, off: 4 };

const STATUS_TEXT: Record<number, string> = {
    200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 301: 'Moved Permanently', 302: 'Found', 304: 'Not Modified',
    400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 409: 'Conflict',
    413: 'Payload Too Large', 415: 'Unsupported Media Type', 422: 'Unprocessable Entity', 429: 'Too Many Requests',
    500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout'
};

/** The headers of a `FetchResponse` (names lower-case, as fetch's). */
export class FetchHeaders {
    private readonly map = new Map<string, string>();
    constructor(pairs: [string, string][]) {
        for (const [k, v] of pairs) {
            const name = k.toLowerCase();
            const had = this.map.get(name);
            this.map.set(name, had === undefined ? v : `${had}, ${v}`);
        }
    }
    get(name: string): string | null {
        return this.map.get(String(name).toLowerCase()) ?? null;
    }
    has(name: string): boolean {
        return this.map.has(String(name).toLowerCase());
    }
    forEach(f: (value: string, name: string, headers: FetchHeaders) => void): void {
        for (const [k, v] of this.map) f(v, k, this);
    }
    entries(): IterableIterator<[string, string]> {
        return this.map.entries();
    }
    keys(): IterableIterator<string> {
        return this.map.keys();
    }
    values(): IterableIterator<string> {
        return this.map.values();
    }
    [Symbol.iterator](): IterableIterator<[string, string]> {
        return this.map.entries();
    }
}

/** What `uncontrolledFetch` resolves to: the parts of fetch's `Response` scripts use. */
export class FetchResponse {
    readonly url: string;
    readonly status: number;
    readonly statusText: string;
    readonly ok: boolean;
    readonly redirected = false;
    readonly type = 'basic';
    readonly headers: FetchHeaders;
    private readonly raw: Uint8Array;
    bodyUsed = false;
    constructor(url: string, r: http.Response) {
        this.url = url;
        this.status = r.status;
        this.statusText = STATUS_TEXT[r.status] ?? '';
        this.ok = r.status >= 200 && r.status < 300;
        this.headers = new FetchHeaders(r.headers);
        this.raw = r.body;
    }
    private take(): Uint8Array {
        if (this.bodyUsed) throw new TypeError('Body is unusable: Body has already been read');
        this.bodyUsed = true;
        return this.raw;
    }
    async text(): Promise<string> {
        return UTF8_IN.decode(this.take());
    }
    async json(): Promise<any> {
        return JSON.parse(UTF8_IN.decode(this.take()));
    }
    async arrayBuffer(): Promise<ArrayBuffer> {
        const b = this.take();
        return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    }
    async bytes(): Promise<Uint8Array> {
        return this.take();
    }
    clone(): FetchResponse {
        if (this.bodyUsed) throw new TypeError('Response.clone: Body has already been consumed.');
        return new FetchResponse(this.url, { status: this.status, headers: [...this.headers.entries()], body: this.raw });
    }
}

// ------ Stacks

type SourceLines = { bundle: string; files: string[]; ranges: [number, number, number[][]][] };

/**
 * A stack whose frames in the project's own files name those files and
 * their lines (`exec@github/actions/get-repo.ts:17:9`), from the table the
 * compiler appends to the bundle; other frames as they are.
 */
function sourceStack(stack: string): string {
    const table = (globalThis as { __sluiceSourceLines?: SourceLines }).__sluiceSourceLines;
    if (!table) return stack;
    return stack.replace(/([^\s@(]*\.js):(\d+):(\d+)/g, (all: string, path: string, l: string, c: string) => {
        if (path !== table.bundle && !path.endsWith(`/${table.bundle}`)) return all;
        const line = Number(l);
        // The last range starting at or before the line.
        let lo = 0;
        let hi = table.ranges.length;
        while (lo < hi) {
            const mid = (lo + hi) >> 1;
            if (table.ranges[mid]![0] <= line) lo = mid + 1;
            else hi = mid;
        }
        const range = table.ranges[lo - 1];
        const segments = range && range[2][line - range[0]];
        if (!range || !segments) return all;
        // The last segment at or before the (0-based) column.
        const column = Number(c) - 1;
        let at = 0;
        for (let i = 0; i + 2 < segments.length && segments[i]! <= column; i += 3) at = i;
        return `${table.files[range[1]]}:${segments[at + 1]}:${segments[at + 2]! + 1}`;
    });
}

// ------ Globals the original's sandbox does not have

// The engine has a `fetch` that cannot reach the network from a script
// (and traps when called); say what to use instead.
Object.defineProperty(globalThis, 'fetch', {
    configurable: true,
    writable: true,
    value: function fetch(): never {
        throw new Error(
            'fetch is not available to scripts: use nango.get / nango.post / nango.proxy (credentials, retries and the egress check included)'
        );
    }
});

// The original runs scripts in a context without code generation from
// strings: `eval`, `Function` and its async and generator siblings throw
// V8's EvalError. The constructors keep their prototypes, so `instanceof
// Function` still holds; zod 4 sees it cannot JIT and parses without it.
{
    const refuse = (): never => {
        throw new EvalError('Code generation from strings disallowed for this context');
    };
    const constructors = [
        Function,
        Object.getPrototypeOf(async function () {}).constructor,
        Object.getPrototypeOf(function* () {}).constructor,
        Object.getPrototypeOf(async function* () {}).constructor
    ] as { prototype: object; name: string }[];
    for (const original of constructors) {
        const stand = function (): never {
            return refuse();
        };
        Object.defineProperty(stand, 'name', { value: original.name });
        Object.defineProperty(stand, 'prototype', { value: original.prototype });
        Object.defineProperty(original.prototype, 'constructor', { configurable: true, writable: true, value: stand });
        if (original === Function) {
            Object.defineProperty(globalThis, 'Function', { configurable: true, writable: true, value: stand });
        }
    }
    const noEval = (): never => refuse();
    Object.defineProperty(noEval, 'name', { value: 'eval' });
    Object.defineProperty(globalThis, 'eval', { configurable: true, writable: true, value: noEval });
}

// ------ Timers

// The engine keeps a host clock subscription per pending timer and polls
// all of them at every turn of its event loop: thousands of timers cost
// the host time that no fuel counts (quadratic in their number), and
// 50,000 exhaust its handles. Here timers wait in one queue, ordered by
// when they are due, behind a single native timer; each still runs in a
// turn of its own, as a native one does.
type TimerFn = (...args: unknown[]) => void;
interface Timer {
    id: number;
    at: number;
    seq: number;
    fn: TimerFn;
    args: unknown[];
    every?: number;
    /** In `queue` (a cleared one stays there until it is removed). */
    queued: boolean;
}

const nativeSetTimeout = globalThis.setTimeout;
const nativeClearTimeout = globalThis.clearTimeout;

if (typeof nativeSetTimeout === 'function' && typeof nativeClearTimeout === 'function') {
    const pending = new Map<number, Timer>();
    const queue: Timer[] = []; // a binary heap by (at, seq)
    let nextId = 1;
    let nextSeq = 0;
    let armed: ReturnType<typeof setTimeout> | undefined;
    let armedAt = Infinity;

    const before = (a: Timer, b: Timer) => a.at < b.at || (a.at === b.at && a.seq < b.seq);
    const swap = (i: number, j: number) => {
        const t = queue[i];
        queue[i] = queue[j];
        queue[j] = t;
    };
    const push = (t: Timer) => {
        t.queued = true;
        queue.push(t);
        let i = queue.length - 1;
        while (i > 0) {
            const parent = (i - 1) >> 1;
            if (!before(queue[i], queue[parent])) break;
            swap(i, parent);
            i = parent;
        }
    };
    const pop = () => {
        queue[0].queued = false;
        const last = queue.pop() as Timer;
        if (queue.length === 0) return;
        queue[0] = last;
        let i = 0;
        for (;;) {
            const l = 2 * i + 1;
            const r = l + 1;
            let m = i;
            if (l < queue.length && before(queue[l], queue[m])) m = l;
            if (r < queue.length && before(queue[r], queue[m])) m = r;
            if (m === i) return;
            swap(i, m);
            i = m;
        }
    };
    // Cleared timers leave the queue when they reach its head, or all at
    // once when they are most of it (a debounce clears thousands, and
    // each holds its closure).
    let cleared = 0;
    const head = (): Timer | undefined => {
        while (queue.length > 0 && pending.get(queue[0].id) !== queue[0]) {
            pop();
            cleared--;
        }
        return queue[0];
    };
    const compact = () => {
        for (const t of queue) t.queued = pending.get(t.id) === t;
        const live = queue.filter((t) => t.queued);
        live.sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
        queue.length = 0;
        queue.push(...live);
        cleared = 0;
    };
    const arm = () => {
        const next = head();
        if (next === undefined || next.at < armedAt) {
            if (armed !== undefined) nativeClearTimeout(armed);
            armed = undefined;
            armedAt = Infinity;
        }
        if (next !== undefined && armed === undefined) {
            armedAt = next.at;
            armed = nativeSetTimeout(fire, Math.max(0, Math.ceil(next.at - performance.now())));
        }
    };
    const fire = () => {
        armed = undefined;
        armedAt = Infinity;
        const t = head();
        if (t === undefined || t.at > performance.now()) {
            arm();
            return;
        }
        pop();
        if (t.every === undefined) {
            pending.delete(t.id);
            handles.delete(t.id);
        } else {
            t.at = performance.now() + t.every;
            t.seq = nextSeq++;
            push(t);
        }
        arm();
        try {
            t.fn(...t.args);
        } catch (e) {
            // The engine would drop it without a word; the logs say it.
            try {
                const text = e instanceof Error ? `${e.name}: ${e.message}\n${sourceStack(e.stack ?? '')}` : safeStringify(e);
                logging.log('error', utf8(`Uncaught error in a timer callback: ${text}`), undefined);
            } catch {
                // Past the log budget.
            }
        }
    };
    // Node's rule: a delay below 1 ms, past 2^31 - 1 ms or not a number is
    // 1 ms (a day-long delay spun: the engine's timer took it modulo 2^32).
    const delayOf = (ms: unknown) => {
        const n = Number(ms);
        return n >= 1 && n <= 0x7fffffff ? n : 1;
    };
    const add = (fn: unknown, ms: unknown, args: unknown[], repeat: boolean): number => {
        if (typeof fn !== 'function') {
            throw new TypeError(`The "callback" argument must be of type function. Received ${typeof fn}`);
        }
        const delay = delayOf(ms);
        const t: Timer = {
            id: nextId++,
            at: performance.now() + delay,
            seq: nextSeq++,
            fn: fn as TimerFn,
            args,
            every: repeat ? delay : undefined,
            queued: false
        };
        pending.set(t.id, t);
        push(t);
        arm();
        return t.id;
    };
    const clear = (id: unknown) => {
        const key = id instanceof Timeout ? id[TIMER_ID] : typeof id === 'string' ? Number(id) : id;
        if (typeof key !== 'number') return;
        // Cleared, its `refresh()` does nothing, as Node's (a timer that
        // fired comes back; one cleared does not).
        const handle = id instanceof Timeout ? id : handles.get(key);
        if (handle !== undefined) handle[CLEARED] = true;
        handles.delete(key);
        const t = pending.get(key);
        if (t === undefined) return;
        pending.delete(key);
        // One running now (taken from the queue) leaves nothing there.
        if (t.queued) {
            cleared++;
            if (cleared > 1024 && cleared > pending.size) compact();
        }
        arm();
    };
    /** `refresh()`: the timer `id` again from now, with its delay, as Node's (fired or not). */
    const refresh = (id: number, fn: unknown, ms: unknown, args: unknown[], repeat: boolean) => {
        const old = pending.get(id);
        const delay = delayOf(ms);
        const t: Timer = {
            id,
            at: performance.now() + delay,
            seq: nextSeq++,
            fn: fn as TimerFn,
            args,
            every: repeat ? delay : undefined,
            queued: false
        };
        // The old entry stays in the queue as a cleared one.
        if (old !== undefined && old.queued) cleared++;
        pending.set(id, t);
        push(t);
        arm();
    };
    const TIMER_ID = Symbol('sluice.timerId');
    const CLEARED = Symbol('sluice.timerCleared');
    /** The handles of the timers pending, by id (for `clearTimeout(number)`). */
    const handles = new Map<number, Timeout>();
    // Node's `Timeout`: `ref`/`unref`/`hasRef`/`refresh`/`close`, taken by
    // `clearTimeout` and `clearInterval`, and its id as a number
    // (`+timer`, a `Map` key by `Number(timer)`). Refs change nothing here:
    // a script's run ends when it settles, whatever timers remain.
    class Timeout {
        [TIMER_ID]: number;
        [CLEARED] = false;
        #ref = true;
        #again: () => void;
        constructor(id: number, again: () => void) {
            this[TIMER_ID] = id;
            this.#again = again;
        }
        ref(): this {
            this.#ref = true;
            return this;
        }
        unref(): this {
            this.#ref = false;
            return this;
        }
        hasRef(): boolean {
            return this.#ref;
        }
        refresh(): this {
            this.#again();
            return this;
        }
        close(): this {
            clear(this[TIMER_ID]);
            return this;
        }
        [Symbol.toPrimitive](): number {
            return this[TIMER_ID];
        }
    }
    const timer = (fn: unknown, ms: unknown, args: unknown[], repeat: boolean): Timeout => {
        const id = add(fn, ms, args, repeat);
        const handle: Timeout = new Timeout(id, () => {
            if (handle[CLEARED]) return;
            refresh(id, fn, ms, args, repeat);
            handles.set(id, handle);
        });
        handles.set(id, handle);
        return handle;
    };
    const define = (name: string, value: unknown) =>
        Object.defineProperty(globalThis, name, { configurable: true, writable: true, value });
    define('setTimeout', function setTimeout(fn: unknown, ms?: unknown, ...args: unknown[]) {
        return timer(fn, ms, args, false);
    });
    define('setInterval', function setInterval(fn: unknown, ms?: unknown, ...args: unknown[]) {
        return timer(fn, ms, args, true);
    });
    define('clearTimeout', function clearTimeout(id?: unknown) {
        clear(id);
    });
    define('clearInterval', function clearInterval(id?: unknown) {
        clear(id);
    });
}

// ------ The bundle's exports

/**
 * A payload as JSON: as `JSON.stringify` writes it, or, when that throws
 * (a `BigInt`, a cycle, a `toJSON` that throws), with BigInts as their
 * digits and a repeated object as `"[Circular]"`.
 */
function payloadBytes(payload: unknown): Uint8Array | undefined {
    try {
        return jsonBytes(payload);
    } catch {
        return utf8(safeStringify(payload));
    }
}

/**
 * The err value of a script's entry point (wit: `script-error`). It never
 * throws: what it throws would reach the engine as no `script-error` at
 * all, which traps (`invalid variant tag value undefined`), losing the
 * error's message and payload.
 */
function scriptError(e: unknown): unknown {
    try {
        return shapeError(e);
    } catch (inner) {
        let why: string;
        try {
            why = inner instanceof Error ? `${inner.name}: ${inner.message}` : String(inner);
        } catch {
            why = 'unknown';
        }
        return { tag: 'internal', val: `the script failed with an error that could not be reported (${why})` };
    }
}

function shapeError(e: unknown): unknown {
    if (e instanceof ActionError || (e && typeof e === 'object' && (e as any).type === 'action_script_runtime_error')) {
        const payload = (e as ActionError).payload;
        return { tag: 'action-error', val: payloadBytes(payload) };
    }
    if (e instanceof AxiosError) {
        const raw = e[RAW];
        return raw.tag === 'status' ? { tag: 'http', val: raw.val } : { tag: 'network', val: raw.val.message };
    }
    if (e instanceof SDKError) {
        return {
            tag: 'sdk',
            val: { code: String(e.code), message: String(e.message), payload: payloadBytes(e.payload) }
        };
    }
    if (e instanceof Error) {
        const head = `${e.name}: ${e.message}`;
        // The stack, whose frames name the build's files, goes to the
        // logs; the caller gets the error itself, as from the original.
        if (e.stack) {
            try {
                logging.log('error', utf8(`${head}\n${sourceStack(e.stack)}`), undefined);
            } catch {
                // Past the log budget: the error still goes back.
            }
        }
        const code = (e as { code?: unknown }).code;
        if (typeof code === 'string' || typeof code === 'number') {
            // The original's payload keeps the error's code.
            return { tag: 'internal', val: safeStringify({ name: e.name, code, message: e.message }) };
        }
        return { tag: 'internal', val: head };
    }
    // As JSON, a string too, as the original reports what is not an Error.
    return { tag: 'internal', val: safeStringify(e) };
}

/**
 * Calls a script and maps its result, turning whatever it throws (at once
 * or through its promise) into a `script-error` for the host. Plain
 * `then` rather than another async function: every promise SpiderMonkey
 * creates records the stack it was made on, which is a good part of a
 * small script's cost.
 */
function settle<T>(run: () => unknown, map: (value: unknown) => T): Promise<T> {
    const fail = (e: unknown): never => {
        throw { payload: scriptError(e) };
    };
    let result: unknown;
    try {
        result = run();
    } catch (e) {
        return Promise.reject({ payload: scriptError(e) });
    }
    return Promise.resolve(result).then((value) => {
        try {
            return map(value);
        } catch (e) {
            return fail(e);
        }
    }, fail);
}

const ignore = (): void => undefined;

function output(value: unknown): Uint8Array | undefined {
    return jsonBytes(value);
}

/**
 * The entry points of a component holding several scripts of one
 * integration: each dispatches on the script name the host gives.
 */
export function bundle(scripts: Record<string, Script>) {
    // The entry module calls this at its top level, which componentize-js
    // runs once before taking its snapshot.
    prewarm(conn.info);
    const script = (): Script => {
        const name = conn.info().scriptName;
        const s = scripts[name];
        if (!s) throw new SDKError('unknown_script', `this component has no script named ${name}`);
        return s;
    };
    const main = (s: Script): ((...args: any[]) => Promise<unknown>) => {
        if (typeof s.default !== 'function') {
            throw new Error(`Default exports is not a function but a ${typeof s.default}`);
        }
        return s.default as (...args: any[]) => Promise<unknown>;
    };
    /** A zero-yaml script's default export (`createSync({...})` and friends), checked against the call. */
    const zero = (s: Script, kind: 'sync' | 'action' | 'onEvent'): Definition | undefined => {
        const d = s.default;
        if (!d || typeof d !== 'object') return undefined;
        const def = d as Definition;
        if (def.type === undefined) throw new Error(`Invalid default export for ${conn.info().scriptName}`);
        if (def.type !== kind) throw new Error(`Incorrect script loaded for ${kind === 'onEvent' ? 'event' : kind}`);
        if (typeof def.exec !== 'function') throw new Error(`There is no default export that is a function for ${conn.info().scriptName}`);
        return def;
    };
    const run = (kind: 'sync' | 'action' | 'onEvent', nango: NangoAction, ...args: unknown[]): unknown => {
        const s = script();
        const def = zero(s, kind);
        return def ? def.exec!(nango, ...args) : main(s)(nango, ...args);
    };
    return {
        fetchData: () => settle(() => run('sync', new NangoSync()), ignore),
        onWebhookPayloadReceived: (payload: Uint8Array) =>
            settle(() => {
                const s = script();
                const body = parseJson(UTF8_IN.decode(payload));
                const def = zero(s, 'sync');
                if (def) {
                    if (typeof def.onWebhook !== 'function') {
                        throw new Error(`There is no onWebhook handler for ${conn.info().scriptName}`);
                    }
                    return def.onWebhook(new NangoSync(), body);
                }
                if (typeof s.onWebhookPayloadReceived !== 'function') {
                    throw new Error(`There is no onWebhookPayloadReceived export for ${conn.info().scriptName}`);
                }
                return s.onWebhookPayloadReceived(new NangoSync(), body);
            }, output),
        runAction: (input: Uint8Array | undefined) => settle(() => run('action', new NangoAction(), input === undefined ? undefined : fromJson(input)), output),
        onEvent: () => settle(() => run('onEvent', new NangoAction()), ignore),
        // The harness parses the spec and encodes and settles its results
        // with built-ins no script replaced (`JSON.stringify`, `TextEncoder`,
        // `Promise.prototype.then` taken before the scripts loaded).
        runTest: (spec: Uint8Array) =>
            runTestBytes(
                spec,
                () => script().default as Definition,
                () => scopeOf(conn.info().scriptName),
                (e) => ({ payload: scriptError(e) })
            )
    };
}
