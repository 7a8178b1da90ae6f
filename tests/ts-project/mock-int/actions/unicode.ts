import type { NangoAction } from '../../models';

// Text beyond ASCII through every way a script hands text to the host and back.
export default async function runAction(nango: NangoAction, input: { text: string }): Promise<Record<string, unknown>> {
    const text = input.text;
    await nango.log(text, { text });
    await nango.setMetadata({ text });
    const metadata = await nango.getMetadata<{ text: string }>();
    const json = (await nango.post({ endpoint: '/echo', data: { text } })).data.body;
    const plain = (await nango.put({ endpoint: '/echo', data: text, headers: { 'Content-Type': 'text/plain' } })).data.body;
    const query = (await nango.get({ endpoint: '/echo', params: { text } })).data.query.text;
    return { input: text, metadata: metadata.text, json: JSON.parse(json).text, plain, query };
}
