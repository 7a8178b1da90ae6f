import type { NangoAction } from '../../models';

function attempt(f: () => unknown): unknown {
    try {
        return f();
    } catch (e) {
        return `${(e as Error).name}: ${(e as Error).message}`;
    }
}

export default async function runAction(_nango: NangoAction): Promise<Record<string, unknown>> {
    const words = ['Zebra', 'banana', 'apple', 'Banana', 'Apple', 'äpple', '_x', '-x', 'item 10', 'item 9'];
    const byName = new Intl.Collator('en', { numeric: true });
    return {
        sorted: [...words].sort((a, b) => a.localeCompare(b)),
        numeric: [...words].sort(byName.compare),
        swedish: ['ä', 'z', 'a'].sort(new Intl.Collator('sv').compare),
        base: 'a'.localeCompare('Á', undefined, { sensitivity: 'base' }),
        resolved: new Intl.Collator('en-u-kn', { sensitivity: 'accent' }).resolvedOptions(),
        withoutNew: (Intl.Collator as unknown as () => Intl.Collator)().compare('a', 'b'),
        slug: 'Crème Brûlée à la carte'.normalize('NFD').replace(/[\u0300-\u036f]/g, ''),
        nfc: 'e\u0301'.normalize() === '\u00e9',
        nfkc: '\ufb01'.normalize('NFKC'),
        badForm: attempt(() => 'x'.normalize('NFX')),
        badTag: attempt(() => 'a'.localeCompare('b', 'en_US!')),
        badOption: attempt(() => new Intl.Collator('en', { sensitivity: 'loud' as 'base' })),
        dates: attempt(() => new Intl.DateTimeFormat('en-US').format(new Date(0)))
    };
}
