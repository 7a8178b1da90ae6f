// What the Intl polyfills share: reading an option as ECMA-402's GetOption
// does, and the message of a host call's error.

/** A string option among `allowed`, or `fallback`; a RangeError with V8's message otherwise. */
export function getOption<T extends string>(
    constructor: string,
    options: Record<string, unknown>,
    name: string,
    allowed: readonly T[],
    fallback: T
): T;
export function getOption<T extends string>(
    constructor: string,
    options: Record<string, unknown>,
    name: string,
    allowed: readonly T[],
    fallback?: T
): T | undefined;
export function getOption<T extends string>(
    constructor: string,
    options: Record<string, unknown>,
    name: string,
    allowed: readonly T[],
    fallback?: T
): T | undefined {
    const value = options[name];
    if (value === undefined) return fallback;
    const text = String(value);
    if (!(allowed as readonly string[]).includes(text)) {
        throw new RangeError(`Value ${text} out of range for Intl.${constructor} options property ${name}`);
    }
    return text as T;
}

/** The message of an error a host import threw (its `err` is the payload). */
export function hostMessage(e: unknown): string {
    return e && typeof e === 'object' && 'payload' in e ? String((e as { payload: unknown }).payload) : String(e);
}
