import type { NangoAction } from '../../models';

// Paginators opened in a loop: each read to its end, left by `break`, or
// (`leave`) only started and kept, which holds its request on the host.
export default async function runAction(nango: NangoAction, input: { rounds: number; leave?: boolean }): Promise<Record<string, unknown>> {
    const config = {
        endpoint: '/offset',
        params: { filler: 'x'.repeat(512) },
        paginate: { type: 'offset', offset_name_in_request: 'offset', limit_name_in_request: 'limit', limit: 2, response_path: 'items' }
    } as const;
    const kept: AsyncGenerator<unknown[]>[] = [];
    let items = 0;
    try {
        for (let i = 0; i < input.rounds; i++) {
            const pages = nango.paginate<unknown>(config);
            if (input.leave) {
                await pages.next();
                kept.push(pages);
            } else if (i % 2 === 0) {
                for await (const page of pages) items += page.length;
            } else {
                for await (const page of pages) {
                    items += page.length;
                    break;
                }
            }
        }
    } catch (e) {
        return { error: `${(e as Error).message}`, opened: kept.length };
    }
    return { items, opened: kept.length };
}
