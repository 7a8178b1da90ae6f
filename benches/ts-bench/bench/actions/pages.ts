import type { NangoAction, PagesResult } from '../../models';

interface Contact {
    id: number;
    name: string;
    email: string;
    created_at: string;
}

// Three pages of fifty contacts, as a paginated API would return them.
async function* pages(): AsyncGenerator<Contact[]> {
    for (let page = 0; page < 3; page++) {
        yield Array.from({ length: 50 }, (_, i) => {
            const n = page * 50 + i;
            return { id: n, name: `Contact ${n}`, email: `c${n}@example.com`, created_at: '2024-03-01T10:00:00Z' };
        });
    }
}

export default async function runAction(nango: NangoAction): Promise<PagesResult> {
    const { team } = await nango.getMetadata<{ team: string }>();
    let count = 0;
    for await (const page of pages()) {
        const mapped = page.map((c) => ({ id: String(c.id), name: c.name.toUpperCase(), email: c.email, createdAt: new Date(c.created_at).toISOString(), team }));
        count += mapped.length;
        await nango.log(`mapped a page of ${mapped.length} contacts`);
    }
    return { count, team };
}
