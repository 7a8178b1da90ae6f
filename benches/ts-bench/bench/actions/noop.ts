import type { NangoAction } from '../../models';

// The floor: instantiation and a call that does nothing.
export default async function runAction(_nango: NangoAction): Promise<number> {
    return 1;
}
