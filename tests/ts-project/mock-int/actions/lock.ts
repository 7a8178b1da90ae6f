import type { NangoAction } from '../../models';

// Takes the `ledger` lock, asks a nested run of itself to take it too (it
// cannot: this execution holds it), then releases it; reports each answer
// and the errors of a bad key and a bad ttl.
export default async function runAction(nango: NangoAction, input?: { nested?: boolean }): Promise<unknown> {
    const out: Record<string, unknown> = {};
    out['first'] = await nango.tryAcquireLock({ key: 'ledger', ttlMs: 60_000 });
    if (input?.nested) {
        return out;
    }
    out['again'] = await nango.tryAcquireLock({ key: 'ledger', ttlMs: 60_000 });
    out['nested'] = await nango.triggerAction(nango.providerConfigKey, nango.connectionId, 'lock', { nested: true });
    for (const [name, key, ttlMs] of [
        ['emptyKey', '', 1],
        ['longKey', 'k'.repeat(256), 1],
        ['zeroTtl', 'k', 0]
    ] as const) {
        try {
            await nango.tryAcquireLock({ key, ttlMs });
            out[name] = 'taken';
        } catch (e) {
            out[name] = (e as Error).message;
        }
    }
    out['released'] = await nango.releaseLock({ key: 'ledger' });
    out['releasedAgain'] = await nango.releaseLock({ key: 'ledger' });
    out['afterRelease'] = await nango.triggerAction(nango.providerConfigKey, nango.connectionId, 'lock', { nested: true });
    // Held when this execution ends: released then.
    out['kept'] = await nango.tryAcquireLock({ key: 'ledger', ttlMs: 60_000 });
    return out;
}
