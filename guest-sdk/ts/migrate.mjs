// `sluice migrate-to-zero-yaml`: rewrites a nango.yaml project's scripts
// into the zero-yaml format, as the original's CLI does. sluice (Rust)
// reads nango.yaml and writes models.ts, index.ts and the rest; this step
// only rewrites TypeScript sources, by splicing text at the offsets
// oxc-parser gives, so everything it does not touch (comments, formatting)
// stays as written.
//
// Job: { scripts: [{ file, rel, kind, props, localType, returnType,
// models }], helpers: [{ file, rel }] }. Result: { ok, errors, files:
// { <file>: <new text> } }; nothing is written here.

import { readFile } from 'node:fs/promises';

/** Types the rewritten scripts import from `nango` when they use them. */
const NANGO_TYPES = ['ActionError', 'ProxyConfiguration'];
/** Calls whose type arguments named a models.ts type, now inferred. */
const GENERIC_CALLS = new Set(['batchSave', 'batchUpdate', 'batchDelete', 'getMetadata']);
const LEGACY_MODELS = /(^|\/)models(\.js|\.ts)?$/;

function walk(node, visit) {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) {
        for (const n of node) walk(n, visit);
        return;
    }
    if (typeof node.type === 'string') visit(node);
    for (const [k, v] of Object.entries(node)) {
        if (k === 'start' || k === 'end' || k === 'type') continue;
        if (v && typeof v === 'object') walk(v, visit);
    }
}

function lineOf(text, offset) {
    let line = 1;
    for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
    return line;
}

/** Applies non-overlapping [start, end, text] edits. */
function splice(text, edits) {
    const sorted = [...edits].sort((a, b) => b[0] - a[0] || b[1] - a[1]);
    let out = text;
    for (const [start, end, insert] of sorted) out = out.slice(0, start) + insert + out.slice(end);
    return out;
}

/** A removed statement takes its line break with it. */
function statementRange(text, node) {
    let end = node.end;
    while (end < text.length && (text[end] === ' ' || text[end] === '\t')) end++;
    if (text[end] === '\r') end++;
    if (text[end] === '\n') end++;
    return [node.start, end];
}

/** The text of [start, end) with the edits that fall inside it. */
function rangeWith(text, start, end, edits) {
    const inside = edits.filter(([s, e]) => s >= start && e <= end).map(([s, e, t]) => [s - start, e - start, t]);
    return splice(text.slice(start, end), inside);
}

/** `(a: T, b: U): R { body }` as `async (a, b): Promise<R> => { body }`. */
function arrow(text, fn, returnType, edits) {
    const params = fn.params.map((p) => (p.type === 'Identifier' ? p.name : text.slice(p.start, p.end))).join(', ');
    const ret = returnType ? `: Promise<${returnType}>` : '';
    return `${fn.async ? 'async ' : ''}(${params})${ret} => ${rangeWith(text, fn.body.start, fn.body.end, edits)}`;
}

function parse(parseSync, file, rel, text, errors) {
    const parsed = parseSync(file, text, { sourceType: 'module' });
    if (parsed.errors.length > 0) {
        const e = parsed.errors[0];
        errors.push({ file: rel, line: lineOf(text, e.labels?.[0]?.start ?? 0), message: `cannot parse: ${e.message}` });
        return undefined;
    }
    return parsed.program;
}

function migrateScript(parseSync, script, text, errors) {
    const program = parse(parseSync, script.file, script.rel, text, errors);
    if (!program) return undefined;
    const edits = [];
    const modelNames = new Set(script.models);
    const usedModels = new Set(script.refs);
    const usedNangoTypes = new Set();
    let usesZ = script.usesZ;
    let hasZodImport = false;
    let lastImportEnd = 0;

    for (const st of program.body) {
        if (st.type !== 'ImportDeclaration') continue;
        const source = st.source.value;
        if (source === 'zod') hasZodImport = true;
        if (LEGACY_MODELS.test(source)) {
            edits.push([...statementRange(text, st), '']);
            lastImportEnd = Math.max(lastImportEnd, st.start);
        } else {
            lastImportEnd = Math.max(lastImportEnd, st.end);
        }
    }

    const exported = program.body.find((st) => st.type === 'ExportDefaultDeclaration');
    const fn = exported?.declaration;
    if (!fn || fn.type !== 'FunctionDeclaration' || !fn.body) {
        errors.push({
            file: script.rel,
            line: exported ? lineOf(text, exported.start) : undefined,
            message: `cannot migrate: the default export must be a function declaration (\`export default async function ${script.kind === 'sync' ? 'fetchData(nango: NangoSync)' : script.kind === 'action' ? 'runAction(nango: NangoAction, input)' : 'onEvent(nango: NangoAction)'} { … }\`)`
        });
        return undefined;
    }

    // A sync's webhook handler becomes its `onWebhook`.
    let webhook;
    if (script.kind === 'sync') {
        for (const st of program.body) {
            const d = st.type === 'ExportNamedDeclaration' ? st.declaration : undefined;
            if (d?.type === 'FunctionDeclaration' && d.id?.name === 'onWebhookPayloadReceived' && d.body) webhook = { st, fn: d };
        }
    }

    const localType = script.localType;
    const legacyType = script.kind === 'sync' ? 'NangoSync' : 'NangoAction';
    walk(program, (node) => {
        if (node.type === 'CallExpression' && node.typeArguments) {
            const c = node.callee;
            if (c?.type === 'MemberExpression' && !c.computed && c.object?.type === 'Identifier' && c.object.name === 'nango' && GENERIC_CALLS.has(c.property?.name)) {
                edits.push([node.typeArguments.start, node.typeArguments.end, '']);
                return;
            }
        }
        if (node.type === 'TSTypeReference' && node.typeName?.type === 'Identifier') {
            const name = node.typeName.name;
            if (localType && name === legacyType) {
                edits.push([node.typeName.start, node.typeName.end, localType]);
            }
            if (NANGO_TYPES.includes(name)) usedNangoTypes.add(name);
        }
        if (node.type === 'TSInterfaceHeritage' || node.type === 'TSExpressionWithTypeArguments') {
            const e = node.expression;
            if (e?.type === 'Identifier' && NANGO_TYPES.includes(e.name)) usedNangoTypes.add(e.name);
        }
        if (node.type === 'Identifier') {
            if (modelNames.has(node.name)) usedModels.add(node.name);
            if (node.name === 'z') usesZ = true;
        }
    });
    // Identifiers inside removed type arguments no longer need an import,
    // but the original keeps any model it finds; so do we (unused imports
    // of types are erased by the bundler).

    const helper = script.kind === 'sync' ? 'createSync' : script.kind === 'action' ? 'createAction' : 'createOnEvent';
    const variable = script.kind === 'sync' ? 'sync' : 'action';
    const props = [...script.props, `exec: ${arrow(text, fn, script.returnType, edits)}`];
    if (webhook) props.push(`onWebhook: ${arrow(text, webhook.fn, undefined, edits)}`);
    const object = `{\n${props.map((p) => `    ${p.replace(/\n/g, '\n    ')}`).join(',\n')}\n}`;
    let replacement;
    if (script.kind === 'on-event') {
        replacement = `export default ${helper}(${object});`;
    } else {
        replacement = `const ${variable} = ${helper}(${object});\n\nexport type ${localType} = Parameters<(typeof ${variable})['exec']>[0];\nexport default ${variable};`;
    }
    // The moved functions' edits are in their new text; the rest of the
    // file keeps its own.
    const moved = [[exported.start, exported.end]];
    if (webhook) moved.push(statementRange(text, webhook.st));
    const kept = edits.filter(([s, e]) => !moved.some(([ms, me]) => s >= ms && e <= me));
    edits.length = 0;
    edits.push(...kept, [exported.start, exported.end, replacement]);
    if (webhook) edits.push([...statementRange(text, webhook.st), '']);

    const imports = [];
    if (usedNangoTypes.size > 0) imports.push(`import type { ${[...usedNangoTypes].join(', ')} } from 'nango';`);
    if (usedModels.size > 0) imports.push(`import { ${[...usedModels].sort().join(', ')} } from '../../models.js';`);
    if (usesZ && !hasZodImport) imports.push(`import * as z from 'zod';`);
    if (imports.length > 0) {
        const at = lastImportEnd;
        const lineStart = at === 0 || text[at - 1] === '\n';
        edits.push([at, at, lineStart ? imports.join('\n') + '\n' : '\n' + imports.join('\n')]);
    }
    edits.push([0, 0, `import { ${helper} } from 'nango';\n`]);
    return splice(text, edits);
}

/** Helper files: the SDK's types now come from `nango`, not models.ts. */
function migrateHelper(parseSync, helper, text, errors) {
    const program = parse(parseSync, helper.file, helper.rel, text, errors);
    if (!program) return undefined;
    const moved = ['NangoAction', 'NangoSync', ...NANGO_TYPES];
    const edits = [];
    const names = [];
    for (const st of program.body) {
        if (st.type !== 'ImportDeclaration' || st.source.value === 'nango') continue;
        const specs = st.specifiers ?? [];
        const taken = specs.filter((s) => s.type === 'ImportSpecifier' && s.imported?.type === 'Identifier' && moved.includes(s.imported.name));
        if (taken.length === 0) continue;
        for (const s of taken) names.push(s.local.name === s.imported.name ? s.imported.name : `${s.imported.name} as ${s.local.name}`);
        const kept = specs.filter((s) => !taken.includes(s));
        if (kept.length === 0) {
            edits.push([...statementRange(text, st), '']);
        } else {
            // Rewrite the declaration with the specifiers that stay.
            const typeOnly = st.importKind === 'type' ? 'type ' : '';
            const def = kept.find((s) => s.type === 'ImportDefaultSpecifier');
            const ns = kept.find((s) => s.type === 'ImportNamespaceSpecifier');
            const named = kept.filter((s) => s.type === 'ImportSpecifier').map((s) => text.slice(s.start, s.end));
            const parts = [];
            if (def) parts.push(def.local.name);
            if (ns) parts.push(`* as ${ns.local.name}`);
            if (named.length > 0) parts.push(`{ ${named.join(', ')} }`);
            edits.push([st.start, st.end, `import ${typeOnly}${parts.join(', ')} from ${text.slice(st.source.start, st.source.end)};`]);
        }
    }
    if (names.length === 0) return undefined;
    edits.push([0, 0, `import type { ${[...new Set(names)].join(', ')} } from 'nango';\n`]);
    return splice(text, edits);
}

export async function migrate(job) {
    const { parseSync } = await import('oxc-parser');
    const errors = [];
    const files = {};
    for (const script of job.scripts ?? []) {
        let text;
        try {
            text = await readFile(script.file, 'utf8');
        } catch (e) {
            errors.push({ file: script.rel, message: `cannot read the script: ${e.message}` });
            continue;
        }
        const out = migrateScript(parseSync, script, text, errors);
        if (out !== undefined) files[script.file] = out;
    }
    for (const helper of job.helpers ?? []) {
        const text = await readFile(helper.file, 'utf8');
        const out = migrateHelper(parseSync, helper, text, errors);
        if (out !== undefined) files[helper.file] = out;
    }
    return errors.length > 0 ? { ok: false, errors } : { ok: true, files };
}
