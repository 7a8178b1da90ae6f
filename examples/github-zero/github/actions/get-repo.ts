import { z } from 'zod';
import { createAction } from 'nango';

const Input = z.object({
    owner: z.string().min(1),
    repo: z.string().min(1)
});

const Output = z.object({
    id: z.number(),
    fullName: z.string(),
    stars: z.number(),
    private: z.boolean(),
    topics: z.array(z.string())
});

const Upstream = z.object({
    id: z.number(),
    full_name: z.string(),
    stargazers_count: z.number(),
    private: z.boolean(),
    topics: z.array(z.string()).optional()
});

export default createAction({
    description: 'Fetch one repository',
    version: '1.0.0',
    input: Input,
    output: Output,
    endpoint: { method: 'GET', path: '/repo', group: 'Repositories' },
    scopes: ['repo'],

    exec: async (nango, input): Promise<z.infer<typeof Output>> => {
        const { data } = await nango.zodValidateInput({ zodSchema: Input, input });
        const response = await nango.get({
            endpoint: `/repos/${encodeURIComponent(data.owner)}/${encodeURIComponent(data.repo)}`,
            retries: 3
        });
        if (response.status === 404) {
            throw new nango.ActionError({ message: 'Repository not found', owner: data.owner, repo: data.repo });
        }
        const repo = Upstream.parse(response.data);
        return {
            id: repo.id,
            fullName: repo.full_name,
            stars: repo.stargazers_count,
            private: repo.private,
            topics: repo.topics ?? []
        };
    }
});
