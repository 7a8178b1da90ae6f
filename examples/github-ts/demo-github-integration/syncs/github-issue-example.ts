import type { NangoSync, GithubIssue } from '../../models';

interface Repository {
    owner: string;
    repo: string;
}

interface Issue {
    id: number;
    number: number;
    title: string;
    state: string;
    html_url: string;
    user: { login: string };
    created_at: string;
    updated_at: string;
    pull_request?: unknown;
}

export function toIssue(issue: Issue): GithubIssue {
    return {
        id: String(issue.id),
        number: issue.number,
        title: issue.title,
        state: issue.state,
        author: issue.user.login,
        url: issue.html_url,
        created_at: new Date(issue.created_at),
        updated_at: new Date(issue.updated_at)
    };
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
