// The `nango` package as zero-yaml scripts import it: `createSync`,
// `createAction` and `createOnEvent` return their argument with its `type`
// (the original does no validation here either; `sluice compile` reads the
// definitions), and the SDK's classes and types.

export { ActionError, NangoAction, NangoSync } from './index';
export type { AxiosResponse, ProxyConfiguration, Pagination, MergingStrategy } from './index';

type Definition = Record<string, unknown>;

export function createSync<T extends Definition>(def: T): T & { type: 'sync' } {
    return { ...def, type: 'sync' };
}

export function createAction<T extends Definition>(def: T): T & { type: 'action' } {
    return { ...def, type: 'action' };
}

export function createOnEvent<T extends Definition>(def: T): T & { type: 'onEvent' } {
    return { ...def, type: 'onEvent' };
}

/** Experimental in the original; compiled but never run by sluice. */
export function createFunction<T extends Definition>(def: T): T & { type: 'function' } {
    return { ...def, type: 'function' };
}
