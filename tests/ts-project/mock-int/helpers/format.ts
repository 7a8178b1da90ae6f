// A local helper: scripts import files of their own folder, which the
// original platform cannot bundle.
export function label(name: string): string {
    return `${name.trim()} (mock)`;
}
