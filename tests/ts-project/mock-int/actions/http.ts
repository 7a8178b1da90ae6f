import type { NangoAction, HttpInput } from '../../models';
import { label } from '../helpers/format';

function describe(e: any) {
    return { name: e.name, message: e.message, code: e.code, isAxiosError: e.isAxiosError === true, status: e.response?.status, data: e.response?.data };
}

export default async function runAction(nango: NangoAction, input: HttpInput): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    const got = await nango.get({ endpoint: '/echo', params: { limit: 10, tags: ['a', 'b'], q: 'x y' }, headers: { 'X-Trace': label('t') } });
    out['get'] = { status: got.status, data: got.data, contentType: got.headers['content-type'] };
    out['post'] = (await nango.post({ endpoint: '/echo', data: { a: 1 } })).data;
    out['put'] = (await nango.put({ endpoint: '/echo', data: 'raw text', headers: { 'Content-Type': 'text/plain' } })).data;
    out['patch'] = (await nango.patch({ endpoint: 'echo', data: { b: 2 } })).data;
    out['delete'] = (await nango.delete({ endpoint: '/echo' })).data;
    out['proxy'] = (await nango.proxy({ method: 'POST', endpoint: '/echo', params: 'raw=1&x=2', data: { c: 3 } })).data;
    out['text'] = (await nango.get({ endpoint: '/echo', responseType: 'text' })).data;
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
