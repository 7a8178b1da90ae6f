import type { NangoAction, FetchInput } from '../../models';

// uncontrolledFetch as fetch sends a request: its default Accept, the
// content type of each kind of body, and headers in each form fetch takes.
export default async function runAction(nango: NangoAction, input: FetchInput): Promise<Record<string, unknown>> {
    const url = `${input.base}/echo`;
    const send = async (options: Record<string, unknown>) => (await nango.uncontrolledFetch({ url, ...options } as any)).json();
    const out: Record<string, unknown> = {};
    out['get'] = await send({});
    out['text'] = await send({ method: 'POST', body: 'hello' });
    out['typed'] = await send({ method: 'POST', body: '{"a":1}', headers: { 'Content-Type': 'application/json' } });
    out['form'] = await send({ method: 'POST', url: new URL(url), body: new URLSearchParams({ a: '1', b: 'x y' }) });
    out['bytes'] = await send({ method: 'PUT', body: new Uint8Array([104, 105]) });
    out['view'] = await send({ method: 'PUT', body: new DataView(new Uint8Array([0, 111, 107, 0]).buffer, 1, 2) });
    out['headers'] = await send({ headers: new Headers({ 'X-Trace': 'from Headers', Accept: 'application/xml' }) });
    out['pairs'] = await send({ headers: [['X-Trace', 'from pairs']] });
    out['blob'] = typeof Blob === 'function' ? await send({ method: 'POST', body: new Blob(['a,b'], { type: 'text/csv' }) }) : 'no Blob';
    if (typeof FormData === 'function') {
        const form = new FormData();
        form.append('name', 'Ada\nL');
        out['formData'] = await send({ method: 'POST', body: form });
    } else {
        out['formData'] = 'no FormData';
    }
    try {
        await send({ headers: { 'bad name': 'x' } });
    } catch (e) {
        out['badHeader'] = { name: (e as Error).name, code: (e as { code?: string }).code, message: (e as Error).message };
    }
    if (input.moved) {
        // Redirected to another origin: followed, the script's own
        // Authorization left behind.
        const moved = await nango.uncontrolledFetch({ url: input.moved, headers: { Authorization: 'Bearer mine', 'X-Trace': 'kept' } });
        out['moved'] = { status: moved.status, data: await moved.json() };
    }
    return out;
}
