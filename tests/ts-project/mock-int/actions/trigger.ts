import type { NangoAction } from '../../models';

export default async function runAction(nango: NangoAction): Promise<unknown> {
    return await nango.triggerAction(nango.providerConfigKey, nango.connectionId, 'echo', { hello: 'world' });
}
