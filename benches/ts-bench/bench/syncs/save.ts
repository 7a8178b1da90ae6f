import type { NangoSync, Row } from '../../models';

// One batch of `count` records of about `size` bytes each, built in the guest:
// serialising it and handing it to the host is most of a sync's own work.
export default async function fetchData(nango: NangoSync): Promise<void> {
    const { count, size } = await nango.getMetadata<{ count: number; size: number }>();
    const filler = 'x'.repeat(size);
    const rows: Row[] = [];
    for (let i = 0; i < count; i++) {
        rows.push({ id: `row-${i}`, payload: filler });
    }
    await nango.batchSave(rows, 'Row');
}
