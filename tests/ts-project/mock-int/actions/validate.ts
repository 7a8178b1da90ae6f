import { z } from 'zod';
import type { NangoAction, ValidateInput } from '../../models';

const schema = z.object({ email: z.string().email(), age: z.number().int().min(18) });

export default async function runAction(nango: NangoAction, input: ValidateInput): Promise<ValidateInput> {
    const parsed = await nango.zodValidateInput({ zodSchema: schema, input });
    return parsed.data;
}
