import { z } from 'zod';
import { createSync } from 'nango';
import { IssueSchema, toIssue } from '../helpers/mappers.js';

const Metadata = z.object({ owner: z.string(), repo: z.string() });

const sync = createSync({
    description: 'Every issue of one repository',
    version: '1.0.0',
    frequency: 'every hour',
    autoStart: true,
    syncType: 'full',
    metadata: Metadata,
    models: { Issue: IssueSchema },
    endpoints: [{ method: 'GET', path: '/issues' }],

    exec: async (nango) => {
        const { owner, repo } = Metadata.parse(await nango.getMetadata());
        await nango.trackDeletesStart('Issue');
        const pages = nango.paginate({
            endpoint: `/repos/${owner}/${repo}/issues`,
            params: { state: 'all' },
            paginate: { limit: 2 },
            retries: 3
        });
        for await (const page of pages) {
            await nango.batchSave(page.map(toIssue), 'Issue');
        }
        await nango.trackDeletesEnd('Issue');
    }
});

export type NangoSyncLocal = Parameters<(typeof sync)['exec']>[0];
export default sync;
