import type { NangoAction, LookupInput } from '../../models';

export default async function runAction(nango: NangoAction, input: LookupInput): Promise<{ found: string }> {
    const response = await nango.get<{ name: string }>({ endpoint: `/lookup/${input.id}`, params: { fields: 'name' } });
    return { found: response.data.name };
}
