import type { NangoSync, Item, Report } from '../../models';
import { label } from '../helpers/format';

interface Upstream {
    id: string;
    name: string;
}

export default async function fetchData(nango: NangoSync): Promise<void> {
    await nango.setMergingStrategy({ strategy: 'override' }, 'Item');
    try {
        await nango.setMergingStrategy({ strategy: 'newest' as 'override' }, 'Report');
    } catch (e) {
        await nango.log(`merging: ${(e as Error).message}`);
    }
    const saved: Item[] = [];
    const pages = nango.paginate<Upstream>({
        endpoint: '/items',
        paginate: { type: 'cursor', cursor_name_in_request: 'cursor', cursor_path_in_response: 'next', response_path: 'items', limit_name_in_request: 'limit', limit: 2 }
    });
    for await (const page of pages) {
        // `_nango_metadata` is dropped before saving, as in the original.
        const items = page.map((u) => ({ id: u.id, name: label(u.name), _nango_metadata: { stale: true } }));
        await nango.batchSave(items, 'Item');
        saved.push(...items);
    }
    const first = saved[0]!;
    const last = saved[saved.length - 1]!;
    await nango.batchUpdate([{ id: first.id, name: 'renamed' }], 'Item');
    await nango.batchDelete([{ id: last.id }], 'Item');
    const found = await nango.getRecordsByIds([first.id, 'missing'], 'Item');
    const report: Report = {
        id: 'report',
        saved: saved.length,
        found: [...found.keys()],
        firstName: found.get(first.id)?.name,
        firstAction: found.get(first.id)?._nango_metadata.last_action,
        lastSyncDate: nango.lastSyncDate ? nango.lastSyncDate.toISOString() : null,
        variant: nango.variant,
        trackDeletes: nango.track_deletes,
        fullName: nango.modelFullName('Item')
    };
    await nango.batchSave([report], 'Report');
}

export async function onWebhookPayloadReceived(nango: NangoSync, payload: { id: number; name: string; bulk?: number }): Promise<{ received: number }> {
    if (payload.bulk) {
        // One call of more records than the host takes at once.
        const items = Array.from({ length: payload.bulk }, (_, i) => ({ id: `bulk-${i}`, name: 'b' }));
        await nango.batchSave(items, 'Item');
        return { received: payload.id };
    }
    await nango.batchSave([{ id: String(payload.id), name: label(payload.name) }], 'Item');
    return { received: payload.id };
}
