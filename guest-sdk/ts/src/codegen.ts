// The engine's `Function` constructor, kept before `index.ts` takes code
// generation from strings away from scripts (as the original's sandbox
// has none): the SDK's own warm-up and the test harness still build
// functions from text. Imported by each of them, so it is evaluated
// before `index.ts` replaces the global.
export const SdkFunction: FunctionConstructor = Function;
