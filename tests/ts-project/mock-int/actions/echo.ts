import type { NangoAction } from '../../models';

export default async function runAction(nango: NangoAction, input: unknown): Promise<unknown> {
    return { input: input === undefined ? 'undefined' : input, script: nango.scriptName };
}
