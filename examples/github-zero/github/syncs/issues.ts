import { z } from 'zod';
import { createSync } from 'nango';
import { IssueSchema, toIssue } from '../helpers/mappers.js';

const Metadata = z.object({ owner: z.string(), repo: z.string() });
const Checkpoint = z.object({ since: z.string() });

const sync = createSync({
    description: 'Every issue of one repository: all of them on the first run, then those updated since the last',
    version: '1.0.0',
    frequency: 'every hour',
    autoStart: false,
    syncType: 'full',
    metadata: Metadata,
    checkpoint: Checkpoint,
    models: { Issue: IssueSchema },
    endpoints: [{ method: 'GET', path: '/issues' }],

    exec: async (nango) => {
        const { owner, repo } = Metadata.parse(await nango.getMetadata());
        const saved = Checkpoint.safeParse(await nango.getCheckpoint());
        const since = saved.success ? saved.data.since : undefined;
        // A full refresh (no checkpoint yet) also deletes the issues it no longer sees.
        if (since === undefined) {
            await nango.trackDeletesStart('Issue');
        }
        let newest = since ?? '';
        const pages = nango.paginate<{ updated_at?: string }>({
            endpoint: `/repos/${owner}/${repo}/issues`,
            params: since === undefined ? { state: 'all' } : { state: 'all', since },
            paginate: { limit: 2 },
            retries: 3
        });
        for await (const page of pages) {
            await nango.batchSave(page.map(toIssue), 'Issue');
            for (const raw of page) {
                if (raw.updated_at && raw.updated_at > newest) newest = raw.updated_at;
            }
        }
        if (since === undefined) {
            await nango.trackDeletesEnd('Issue');
        }
        if (newest) {
            await nango.saveCheckpoint({ since: newest });
        }
    }
});

export type NangoSyncLocal = Parameters<(typeof sync)['exec']>[0];
export default sync;
