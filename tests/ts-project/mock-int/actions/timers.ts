import type { NangoAction } from '../../models';

export default async function runAction(_nango: NangoAction, input: { many: number }): Promise<Record<string, unknown>> {
    // Due order, arguments, clearing, intervals.
    const order: string[] = [];
    let ticks = 0;
    await new Promise<void>((done) => {
        setTimeout(() => order.push('c'), 30);
        setTimeout(() => order.push('a'), 0);
        const cleared = setTimeout(() => order.push('cleared'), 10);
        setTimeout((x: string) => order.push(x), 10, 'b');
        clearTimeout(cleared);
        const every = setInterval(() => {
            ticks++;
            if (ticks === 3) clearInterval(every);
        }, 5);
        setTimeout(done, 60);
    });
    // Many at once all run.
    let fired = 0;
    await new Promise<void>((done) => {
        for (let i = 0; i < input.many; i++) setTimeout(() => fired++, 0);
        setTimeout(done, 1);
    });
    // Each runs in a turn of its own: promise reactions one queues run
    // before the next timer.
    const turns: string[] = [];
    await new Promise<void>((done) => {
        setTimeout(() => void Promise.resolve().then(() => turns.push('reaction')), 0);
        setTimeout(() => {
            turns.push('next timer');
            done();
        }, 0);
    });
    // One that throws is logged, and the others still run.
    let after = false;
    await new Promise<void>((done) => {
        setTimeout(() => {
            throw new Error('thrown in a timer');
        }, 0);
        setTimeout(() => {
            after = true;
            done();
        }, 0);
    });
    // Node's delays: one past 2^31 - 1 ms (or Infinity) is 1 ms, not a
    // spin; an id given as text clears too.
    await new Promise((r) => setTimeout(r, Infinity));
    await new Promise((r) => setTimeout(r, 30 * 86_400_000));
    let textCleared = true;
    const id = setTimeout(() => (textCleared = false), 5);
    clearTimeout(String(id) as any);
    await new Promise((r) => setTimeout(r, 20));
    return { order, ticks, fired, turns, after, textCleared };
}
