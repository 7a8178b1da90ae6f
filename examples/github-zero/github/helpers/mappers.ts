import { z } from 'zod';

export const IssueSchema = z.object({
    id: z.string(),
    number: z.number(),
    title: z.string(),
    state: z.enum(['open', 'closed']),
    labels: z.array(z.string()),
    closedAt: z.string().optional()
});
export type Issue = z.infer<typeof IssueSchema>;

const UpstreamIssue = z.object({
    id: z.number(),
    number: z.number(),
    title: z.string(),
    state: z.enum(['open', 'closed']),
    labels: z.array(z.object({ name: z.string() })),
    closed_at: z.string().nullable()
});

/** An upstream issue, checked with zod, as the sync's model. */
export function toIssue(raw: unknown): Issue {
    const i = UpstreamIssue.parse(raw);
    return {
        id: String(i.id),
        number: i.number,
        title: i.title,
        state: i.state,
        labels: i.labels.map((l) => l.name),
        ...(i.closed_at !== null && { closedAt: i.closed_at })
    };
}
