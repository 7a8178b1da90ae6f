import type { NangoSync, Listing, ProxyConfiguration } from '../../models';

export default async function fetchData(nango: NangoSync): Promise<void> {
    const connection = await nango.getConnection();
    const { team } = await nango.getMetadata<{ team: string }>();
    const config: ProxyConfiguration = {
        endpoint: '/teams/items',
        params: { team },
        headers: { 'X-Account': connection.connection_config['account'] },
        paginate: { type: 'cursor', cursor_name_in_request: 'after', cursor_path_in_response: 'next', response_path: 'items', limit_name_in_request: 'limit', limit: 2 }
    };
    for await (const page of nango.paginate<{ id: number; title: string }>(config)) {
        await nango.batchSave<Listing>(page.map((i) => ({ id: String(i.id), name: i.title })), 'Listing');
    }
    await nango.batchDelete([{ id: 'gone' }], 'Listing');
}
