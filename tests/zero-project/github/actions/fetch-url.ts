import { z } from 'zod';
import { createAction } from 'nango';

// Scripts have no `fetch` (as in the original's sandbox): sluice says what
// to use instead. This action shows it.
export default createAction({
    description: 'Reads a URL with fetch, which scripts do not have',
    version: '1.0.0',
    input: z.object({ url: z.string() }),
    output: z.object({ status: z.number() }),

    exec: async (_nango, input) => {
        const response = await fetch(input.url);
        return { status: response.status };
    }
});
