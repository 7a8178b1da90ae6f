import type { NangoAction, PingResult } from '../../models';

// One request to the upstream (a loopback mock in the server bench).
export default async function runAction(nango: NangoAction): Promise<PingResult> {
    const res = await nango.get({ endpoint: '/ping' });
    return { ok: res.data.ok === true };
}
