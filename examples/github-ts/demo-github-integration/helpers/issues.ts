import type { GithubIssue } from '../../models';

/** An issue as GitHub's API returns it (the fields the scripts read). */
export interface Issue {
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
