import type { NangoAction, GithubIssue, CreateIssueInput } from '../../models';
import { toIssue } from '../helpers/issues';

export default async function runAction(nango: NangoAction, input: CreateIssueInput): Promise<GithubIssue> {
    if (!input?.title) {
        throw new nango.ActionError({ message: 'title is required' });
    }
    const { owner, repo } = await nango.getMetadata<{ owner: string; repo: string }>();
    try {
        const response = await nango.post({ endpoint: `/repos/${owner}/${repo}/issues`, data: { title: input.title, body: input.body ?? '' } });
        return toIssue(response.data);
    } catch (error: any) {
        if (error.response?.status === 410) {
            throw new nango.ActionError({ message: `issues are disabled in ${owner}/${repo}` });
        }
        throw error;
    }
}
