import type { NangoSync, GithubIssue } from '../../models';
import { toIssue, type Issue } from '../helpers/issues';

interface Repository {
    owner: string;
    repo: string;
}

export default async function fetchData(nango: NangoSync): Promise<void> {
    const { owner, repo } = await nango.getMetadata<Repository>();
    const params: Record<string, string> = { state: 'all' };
    if (nango.lastSyncDate) {
        params['since'] = nango.lastSyncDate.toISOString();
    }
    // GitHub's pagination (a `Link` header) comes from the provider's
    // definition; `limit` sets the page size.
    for await (const page of nango.paginate<Issue>({ endpoint: `/repos/${owner}/${repo}/issues`, params, paginate: { limit: 2 }, retries: 3 })) {
        const issues = page.filter((issue) => !issue.pull_request).map(toIssue);
        await nango.log(`Saving ${issues.length} issues of ${owner}/${repo}`);
        await nango.batchSave<GithubIssue>(issues, 'GithubIssue');
    }
}
