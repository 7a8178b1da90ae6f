import type { NangoAction, HttpInput } from '../../models';
import { label } from '../helpers/format';

function describe(e: any) {
    return { name: e.name, message: e.message, code: e.code, isAxiosError: e.isAxiosError === true, status: e.response?.status, data: e.response?.data };
}

export default async function runAction(nango: NangoAction, input: HttpInput): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    const got = await nango.get({ endpoint: '/echo', params: { limit: 10, tags: ['a', 'b'], q: 'x y' }, headers: { 'X-Trace': label('t') } });
    out['get'] = { status: got.status, statusText: got.statusText, data: got.data, contentType: got.headers['content-type'] };
    out['post'] = (await nango.post({ endpoint: '/echo', data: { a: 1 } })).data;
    out['empty'] = (await nango.post({ endpoint: '/echo' })).data;
    out['put'] = (await nango.put({ endpoint: '/echo', data: 'raw text', headers: { 'Content-Type': 'text/plain' } })).data;
    out['patch'] = (await nango.patch({ endpoint: 'echo', data: { b: 2 } })).data;
    out['delete'] = (await nango.delete({ endpoint: '/echo' })).data;
    out['proxy'] = (await nango.proxy({ method: 'POST', endpoint: '/echo', params: 'raw=1&x=2', data: { c: 3 } })).data;
    out['text'] = (await nango.get({ endpoint: '/echo', responseType: 'text' })).data;
    // Forms as axios sends them; headers without a value are not sent.
    out['form'] = (
        await nango.post({
            endpoint: '/echo',
            data: { grant_type: 'x', 'a b': 'c&d', nested: { k: 1, none: null }, list: [1, 2], 'ids[]': [3], nil: null, gone: undefined },
            headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Trace': undefined as unknown as string }
        })
    ).data;
    out['searchParams'] = (await nango.post({ endpoint: '/echo', data: new URLSearchParams({ a: '1', b: 'x y' }) })).data;
    // `on_page` runs once the page was taken, as the original's.
    const order: string[] = [];
    for await (const page of nango.paginate({
        endpoint: '/items',
        paginate: {
            type: 'cursor',
            cursor_name_in_request: 'cursor',
            cursor_path_in_response: 'next',
            response_path: 'items',
            on_page: async ({ nextPageParam }) => {
                order.push(`on_page:${String(nextPageParam)}`);
            }
        }
    })) {
        order.push(`page:${page.length}`);
    }
    out['onPage'] = order;
    const offsetOrder: string[] = [];
    for await (const page of nango.paginate({
        endpoint: '/offset',
        paginate: {
            type: 'offset',
            offset_name_in_request: 'offset',
            limit_name_in_request: 'limit',
            limit: 2,
            response_path: 'items',
            on_page: async ({ nextPageParam }) => {
                offsetOrder.push(`on_page:${String(nextPageParam)}`);
            }
        }
    })) {
        offsetOrder.push(`page:${page.length}`);
    }
    out['offsetPages'] = offsetOrder;
    out['locks'] = [await nango.tryAcquireLock({ key: 'k', ttlMs: 10000 }), await nango.tryAcquireLock({ key: 'k', ttlMs: 10000 })];
    await nango.log({ level: 'error' });
    out['aborted'] = nango.abortSignal.aborted;
    try {
        await nango.get({ endpoint: '/missing' });
    } catch (e) {
        out['notFound'] = describe(e);
    }
    try {
        await nango.get({ endpoint: '/echo', baseUrlOverride: 'https://elsewhere.example' });
    } catch (e) {
        out['egress'] = describe(e);
    }
    if (input?.uncaught) {
        await nango.post({ endpoint: '/missing', data: { why: 'uncaught' } });
    }
    return out;
}
