// The nango:scripts imports as componentize-js exposes them to JavaScript
// (wit/nango.wit is the contract; these are its JavaScript shapes: records
// are objects with camelCase fields, variants `{ tag, val }`, options
// `undefined`, results return the ok value or throw an error whose
// `payload` is the err value). `json` and `text` are UTF-8 bytes: a
// `Uint8Array` from the host, a `Uint8Array` (from `TextEncoder`) to it.

declare module 'nango:scripts/http@0.2.0' {
    export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
    export type Query = { tag: 'text'; val: string } | { tag: 'object'; val: Uint8Array };
    export type Body =
        | { tag: 'json'; val: Uint8Array }
        | { tag: 'text'; val: Uint8Array }
        | { tag: 'bytes'; val: Uint8Array }
        | { tag: 'multipart'; val: [string, string][] };
    export interface RetryHeader {
        at?: string;
        after?: string;
    }
    export interface Request {
        method: Method;
        endpoint: string;
        headers: [string, string][];
        params?: Query;
        data?: Body;
        retries: number;
        retryOn: Uint16Array | number[];
        retryHeader?: RetryHeader;
        baseUrlOverride?: string;
        decompress: boolean;
        providerConfigKey?: string;
        connectionId?: string;
    }
    export interface Response {
        status: number;
        headers: [string, string][];
        body: Uint8Array;
    }
    export interface NangoError {
        code: string;
        message: string;
        payload?: Uint8Array;
    }
    export type HttpError = { tag: 'status'; val: Response } | { tag: 'failed'; val: NangoError };
    export interface Page {
        items: Uint8Array;
        next?: string;
    }
    export class Paginator {
        nextPage(): Page | undefined;
        lastPage(): PageResponse | undefined;
    }
    export interface PageResponse {
        response: Response;
        nextPageParam: Uint8Array;
    }
    export interface FetchRequest {
        url: string;
        method: Method;
        headers: [string, string][];
        body?: Uint8Array;
    }
    export function proxy(req: Request): Response;
    export function paginate(req: Request, config: Uint8Array | undefined): Paginator;
    export function uncontrolledFetch(req: FetchRequest): Response;
}

declare module 'nango:scripts/log@0.2.0' {
    export type Level = 'debug' | 'info' | 'warn' | 'error';
    export function log(level: Level, message: Uint8Array, meta: Uint8Array | undefined): void;
}

declare module 'nango:scripts/connection@0.2.0' {
    export interface ScriptInfo {
        connectionId: string;
        providerConfigKey: string;
        provider?: string;
        environmentName: string;
        activityLogId: string;
        scriptName: string;
        replaying: boolean;
    }
    export function info(): ScriptInfo;
    export function getConnection(providerConfigKey: string | undefined, connectionId: string | undefined): Uint8Array;
    export function getConnectionWith(
        providerConfigKey: string | undefined,
        connectionId: string | undefined,
        forceRefresh: boolean,
        refreshToken: boolean
    ): Uint8Array;
    export function getMetadata(): Uint8Array;
    export function setMetadata(metadata: Uint8Array): void;
    export function updateMetadata(metadata: Uint8Array): void;
    export function getEnvironmentVariables(): { name: string; value: string }[];
    export function getWebhookUrl(): string | undefined;
    export function getIntegration(includes: string[]): Uint8Array;
    export function triggerAction(
        providerConfigKey: string,
        connectionId: string,
        actionName: string,
        input: Uint8Array | undefined
    ): Uint8Array | undefined;
    export function tryAcquireLock(key: string, ttlMs: bigint): boolean;
    export function releaseLock(key: string): boolean;
    export function releaseAllLocks(): void;
    export function triggerSync(body: Uint8Array): void;
    export function startSync(body: Uint8Array): void;
}

declare module 'nango:scripts/records@0.2.0' {
    export type MergingStrategy = 'override' | 'ignore-if-modified-after';
    export function batchSave(model: string, records: Uint8Array): void;
    export function batchDelete(model: string, records: Uint8Array): void;
    export function batchUpdate(model: string, records: Uint8Array): void;
    export function getRecordsByIds(model: string, ids: Uint8Array): Uint8Array;
    export interface RecordPage {
        records: Uint8Array;
        nextCursor?: string;
    }
    export function listRecords(model: string, cursor: string | undefined, limit: number): RecordPage;
    export function setMergingStrategy(model: string, strategy: MergingStrategy): void;
    export function getCheckpoint(): Uint8Array | undefined;
    export function saveCheckpoint(checkpoint: Uint8Array): void;
    export function clearCheckpoint(): void;
    export function trackDeletesStart(model: string): void;
    export function trackDeletesEnd(model: string): void;
}

declare module 'nango:scripts/sync-context@0.2.0' {
    export function lastSyncDate(): string | undefined;
    export function variant(): string;
    export function trackDeletes(): boolean;
}

declare module 'nango:scripts/intl@0.2.0' {
    export type Sensitivity = 'base' | 'accent' | 'case' | 'variant';
    export type CaseFirst = 'upper-first' | 'lower-first' | 'off';
    export type NormalForm = 'nfc' | 'nfd' | 'nfkc' | 'nfkd';
    export interface CollatorOptions {
        locale: string;
        sensitivity: Sensitivity;
        ignorePunctuation: boolean;
        numeric?: boolean;
        caseFirst?: CaseFirst;
    }
    export interface CollatorInfo {
        id: number;
        locale: string;
        numeric: boolean;
        caseFirst: CaseFirst;
    }
    export function collator(options: CollatorOptions): CollatorInfo;
    export function compare(collator: number, a: Uint8Array, b: Uint8Array): number;
    export function normalize(form: NormalForm, s: Uint8Array): Uint8Array;
    export interface ZoneInfo {
        name: string;
        offsetMinutes: number;
        abbreviation: string;
        daylight: boolean;
    }
    export function zoneAt(zone: string, epochMs: number): ZoneInfo;
}
