import type { NangoAction } from '../../models';

export default async function runAction(nango: NangoAction): Promise<number> {
    await nango.log('spinning');
    let n = 0;
    for (;;) {
        n = (n + 1) % 1000;
    }
}
