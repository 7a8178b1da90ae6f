import type { NangoAction } from '../../models';

// triggerSync and startSync in each of the original's call shapes, and
// their refusals.
export default async function runAction(nango: NangoAction): Promise<unknown> {
    const out: Record<string, unknown> = {};
    await nango.triggerSync('mock-int', 'c1', 'records');
    await nango.triggerSync('mock-int', 'c1', { name: 'records', variant: 'v2' }, true);
    await nango.triggerSync('mock-int', 'c1', 'records', false);
    await nango.triggerSync('mock-int', 'c1', 'records', 'full_refresh_and_clear_cache');
    await nango.triggerSync('mock-int', 'c1', 'records', { reset: true, emptyCache: true });
    await nango.startSync('mock-int', ['records', 'listing']);
    await nango.startSync('mock-int', ['records'], 'c1');
    try {
        await nango.triggerSync('mock-int', 'c1', 'nope');
        out['refused'] = 'not refused';
    } catch (e) {
        const err = e as { code?: string; message: string; payload?: unknown };
        out['refused'] = { code: err.code, message: err.message, payload: err.payload };
    }
    try {
        await nango.startSync('mock-int', 'records' as unknown as string[]);
        out['notArray'] = 'accepted';
    } catch (e) {
        out['notArray'] = (e as Error).message;
    }
    return out;
}
