// The `nango` package as zero-yaml scripts import it: `createSync`,
// `createAction` and `createOnEvent` return their argument with its `type`
// (the original does no validation here either; `sluice compile` reads the
// definitions), and the SDK's classes and types.

import { scriptView } from './harness';

export { ActionError, NangoAction, NangoSync } from './index';
export type { AxiosResponse, ProxyConfiguration, Pagination, MergingStrategy } from './index';

type Definition = Record<string, unknown>;

// Taken when the SDK loads, before the scripts' modules.
const apply = Reflect.apply;
const defineProperty = Object.defineProperty;
const freeze = Object.freeze;

/**
 * The definition with its type, its `exec` and `onWebhook` given the
 * script's view of a test's mock when a test written by hand passes the
 * mock itself (harness.ts `scriptView`; anything else as it is); frozen,
 * those two neither writable nor configurable.
 */
function define<T extends Definition, K extends string>(def: T, type: K): T & { type: K } {
    const out: Definition = { ...def, type };
    for (const key of ['exec', 'onWebhook']) {
        const f = def[key];
        if (typeof f !== 'function') continue;
        // Fixed: a script that swapped it after `createAction` got the
        // test's mock itself.
        defineProperty(out, key, {
            value: function (this: unknown, nango: unknown, ...rest: unknown[]) {
                return apply(f, this, [scriptView(nango), ...rest]);
            },
            writable: false,
            enumerable: true,
            configurable: false
        });
    }
    return freeze(out) as T & { type: K };
}

export function createSync<T extends Definition>(def: T): T & { type: 'sync' } {
    return define(def, 'sync');
}

export function createAction<T extends Definition>(def: T): T & { type: 'action' } {
    return define(def, 'action');
}

export function createOnEvent<T extends Definition>(def: T): T & { type: 'onEvent' } {
    return define(def, 'onEvent');
}

/** Experimental in the original; compiled but never run by sluice. */
export function createFunction<T extends Definition>(def: T): T & { type: 'function' } {
    return { ...def, type: 'function' };
}
