import type { NangoAction } from '../../models';

export default async function runAction(nango: NangoAction): Promise<Record<string, unknown>> {
    const connection = await nango.getConnection();
    const before = await nango.getMetadata();
    await nango.setMetadata({ plan: 'pro', seats: 1 });
    await nango.updateMetadata({ seats: 3 });
    const after = await nango.getMetadata();
    await nango.log('plain message');
    await nango.log('careful', { level: 'warn' });
    await nango.log('with a payload', { a: 1 }, { level: 'error' });
    await nango.log({ an: 'object' });
    await nango.log('verbose maps to debug', { level: 'verbose' });
    (nango as unknown as { setLogger(l: { level: string }): void }).setLogger({ level: 'error' });
    await nango.log('below the script level', { level: 'warn' });
    (nango as unknown as { setLogger(l: { level: string }): void }).setLogger({ level: 'debug' });
    console.log('from console.log');
    console.error('from console.error');
    return {
        connectionId: nango.connectionId,
        providerConfigKey: nango.providerConfigKey,
        provider: nango.provider,
        environment: nango.environmentName,
        credentials: connection.credentials,
        before,
        after,
        env: await nango.getEnvironmentVariables(),
        webhookUrl: await nango.getWebhookURL(),
        token: await nango.getToken(),
        refreshToken: (await nango.getConnection('', '', { refreshToken: true })).credentials.refresh_token,
        flowAttributes: (() => {
            try {
                return nango.getFlowAttributes();
            } catch (e) {
                return (e as Error).message;
            }
        })()
    };
}
