import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/*
 * The CNI plugin is a process per pod ADD and DEL: whatever its entry imports statically is
 * loaded for every pod. This walks the static import graph of controller/cni/main.ts from the
 * sources (type-only imports are erased by tsc, dynamic import() is loaded only when reached)
 * and fails when it reaches a module the plugin must not pay for.
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface ModuleImports {
  static: string[];
  dynamic: string[];
}

/** The module specifiers a TypeScript source imports at load time, and those it imports with import(). */
function importsOf(source: string): ModuleImports {
  const file = ts.createSourceFile('x.ts', source, ts.ScriptTarget.ES2022, true);
  const out: ModuleImports = { static: [], dynamic: [] };
  for (const st of file.statements) {
    if (ts.isImportDeclaration(st) && !st.importClause?.isTypeOnly) out.static.push((st.moduleSpecifier as ts.StringLiteral).text);
    if (ts.isExportDeclaration(st) && st.moduleSpecifier && !st.isTypeOnly) out.static.push((st.moduleSpecifier as ts.StringLiteral).text);
  }
  const visit = (node: ts.Node): void => {
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && ts.isStringLiteral(node.arguments[0]))
      out.dynamic.push(node.arguments[0].text);
    ts.forEachChild(node, visit);
  };
  visit(file);
  return out;
}

/** Every repository file (relative to the root) and every package reached through static imports from `entry`. */
function staticGraph(entry: string): { files: string[]; packages: string[]; dynamic: string[] } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const dynamic = new Set<string>();
  const walk = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    const { static: imports, dynamic: lazy } = importsOf(readFileSync(path.join(root, file), 'utf8'));
    const resolve = (spec: string) => path.relative(root, path.resolve(path.join(root, path.dirname(file)), spec.replace(/\.js$/, '.ts')));
    for (const spec of lazy) if (spec.startsWith('.')) dynamic.add(resolve(spec));
    for (const spec of imports) {
      if (spec.startsWith('.')) walk(resolve(spec));
      else if (!spec.startsWith('node:')) packages.add(spec);
    }
  };
  walk(entry);
  return { files: [...files].sort(), packages: [...packages].sort(), dynamic: [...dynamic].sort() };
}

describe('the import walker', () => {
  it('counts value imports and re-exports, not type-only ones, and tells import() apart', () => {
    const src = `import { a } from './a.js';\nimport type { B } from './b.js';\nexport { c } from 'c';\nexport type { D } from './d.js';\nimport 'e';\nconst f = () => import('./f.js');`;
    expect(importsOf(src)).toEqual({ static: ['./a.js', 'c', 'e'], dynamic: ['./f.js'] });
  });
});

describe("the CNI plugin's static import graph", () => {
  const graph = staticGraph('controller/cni/main.ts');

  it('reaches the plugin and the endpoint records (the walk follows the entry)', () => {
    expect(graph.files).toEqual(expect.arrayContaining(['controller/cni/main.ts', 'controller/cni/plugin.ts', 'controller/endpoints/records.ts']));
  });

  it("loads no package but zod's tree-shakable API: not etcd3, not koffi, not zod's classic API", () => {
    expect(graph.packages).toEqual(['zod/mini']);
  });

  it('loads nothing of the agent, etcd, the lab, the CLI, libbpf or the datapath', () => {
    const heavy = [
      'controller/agent/',
      'controller/etcd/',
      'controller/lab/',
      'controller/cli',
      'controller/bpf/',
      'controller/dataplane/',
      'controller/reconcile/',
      'controller/metrics/',
      'controller/bench/',
    ];
    expect(graph.files.filter((f) => heavy.some((h) => f.startsWith(h)))).toEqual([]);
  });

  it("reaches libbpf only through the DEL's import(), which needs koffi", () => {
    expect(graph.dynamic).toEqual(['controller/endpoints/forget.ts']);
    expect(graph.files).not.toContain('controller/endpoints/forget.ts');
    expect(staticGraph('controller/endpoints/forget.ts').packages).toContain('koffi');
  });
});
