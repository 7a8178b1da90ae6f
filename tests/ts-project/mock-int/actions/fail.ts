import type { NangoAction, FailInput } from '../../models';

export default async function runAction(nango: NangoAction, input: FailInput): Promise<never> {
    switch (input.how) {
        case 'action':
            throw new nango.ActionError({ message: 'the item is locked', code: 'locked', retryable: false });
        case 'error':
            throw new TypeError('something broke');
        case 'coded': {
            const e = new Error('custom msg') as Error & { code: string };
            e.code = 'MY_CODE';
            throw e;
        }
        case 'network':
            // A key in the query stays out of the error message.
            await nango.get({ endpoint: '/x', baseUrlOverride: 'http://127.0.0.1:1', params: { api_key: 'query-secret-123' } });
            throw new Error('unreachable');
        case 'never':
            // Nothing will ever settle it.
            await new Promise(() => {});
            throw new Error('unreachable');
        case 'retries':
            // A negative count is no retry (it once wrapped to four billion).
            await nango.get({ endpoint: '/nothing', retries: -1, retryOn: [404] });
            throw new Error('unreachable');
        case 'header':
            await nango.get({ endpoint: '/echo', headers: { 'x-bad': 'a\r\nb' }, retries: 2 });
            throw new Error('unreachable');
        case 'deep': {
            // Valid JSON, deeper than the host parses.
            let v: Record<string, unknown> = {};
            for (let i = 0; i < 200; i++) v = { c: v };
            return v as never;
        }
        case 'big':
            return { text: 'x'.repeat(11 * 1024 * 1024) } as never;
        case 'config':
            await nango.get({ endpoint: '/echo', retries: 1, retryOn: ['x'] as any });
            throw new Error('unreachable');
        case 'bigint':
            // JSON.stringify throws on a BigInt: the payload still reaches
            // the caller (the engine trapped, losing message and payload).
            throw new nango.ActionError({ message: 'too big', id: 12345678901234567890n });
        case 'cycle': {
            const payload: Record<string, unknown> = { message: 'in a loop' };
            payload['self'] = payload;
            throw new nango.ActionError(payload);
        }
        default:
            throw { weird: true };
    }
}
