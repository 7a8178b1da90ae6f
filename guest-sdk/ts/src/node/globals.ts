// Injected into every script bundle: the globals the original's sandbox
// provides beyond the JavaScript built-ins (`Buffer`; `URL`,
// `URLSearchParams`, `console` and `setTimeout` come with the engine).
export { Buffer } from 'buffer';
