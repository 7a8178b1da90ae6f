// The nango:scripts imports as componentize-js exposes them to JavaScript
// (wit/nango.wit is the contract; these are its JavaScript shapes: records
// are objects with camelCase fields, variants `{ tag, val }`, options
// `undefined`, results return the ok value or throw an error whose
// `payload` is the err value).

declare module 'nango:scripts/http@0.1.0' {
    export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
    export type Query = { tag: 'text'; val: string } | { tag: 'object'; val: string };
    export type Body =
        | { tag: 'json'; val: string }
        | { tag: 'text'; val: string }
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
        payload?: string;
    }
    export type HttpError = { tag: 'status'; val: Response } | { tag: 'failed'; val: NangoError };
    export interface Page {
        items: string;
        next?: string;
    }
    export class Paginator {
        nextPage(): Page | undefined;
    }
    export function proxy(req: Request): Response;
    export function paginate(req: Request, config: string | undefined): Paginator;
}

declare module 'nango:scripts/log@0.1.0' {
    export type Level = 'debug' | 'info' | 'warn' | 'error';
    export function log(level: Level, message: string, meta: string | undefined): void;
}

declare module 'nango:scripts/connection@0.1.0' {
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
    export function getConnection(providerConfigKey: string | undefined, connectionId: string | undefined): string;
    export function getMetadata(): string;
    export function setMetadata(metadata: string): void;
    export function updateMetadata(metadata: string): void;
    export function getEnvironmentVariables(): { name: string; value: string }[];
    export function getWebhookUrl(): string | undefined;
    export function triggerAction(providerConfigKey: string, connectionId: string, actionName: string, input: string | undefined): string | undefined;
}

declare module 'nango:scripts/records@0.1.0' {
    export type MergingStrategy = 'override' | 'ignore-if-modified-after';
    export function batchSave(model: string, records: string): void;
    export function batchDelete(model: string, records: string): void;
    export function batchUpdate(model: string, records: string): void;
    export function getRecordsByIds(model: string, ids: string[]): string;
    export function setMergingStrategy(model: string, strategy: MergingStrategy): void;
}

declare module 'nango:scripts/sync-context@0.1.0' {
    export function lastSyncDate(): string | undefined;
    export function variant(): string;
    export function trackDeletes(): boolean;
}
