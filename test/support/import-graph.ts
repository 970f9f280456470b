import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

/*
 * The repository's TypeScript import graph, read from the sources (relative imports only:
 * packages and node: builtins are not layers of ours). Pure functions over it for the layering
 * tests.
 */

/** Relative module specifiers of one source text: static imports, re-exports, import(). */
export function relativeImports(source: string): string[] {
  const out: string[] = [];
  const patterns = [/\bfrom\s+['"](\.{1,2}\/[^'"]+)['"]/g, /\bimport\s*\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g, /^\s*import\s+['"](\.{1,2}\/[^'"]+)['"]/gm];
  for (const re of patterns) for (const m of source.matchAll(re)) out.push(m[1]);
  return out;
}

/** file -> files it imports, all repo-relative with .ts (the .js of NodeNext specifiers mapped back). */
export type ImportGraph = Map<string, Set<string>>;

function tsFiles(root: string, dir: string): string[] {
  return readdirSync(path.join(root, dir)).flatMap((name) => {
    const rel = path.join(dir, name);
    if (statSync(path.join(root, rel)).isDirectory()) return tsFiles(root, rel);
    return rel.endsWith('.ts') ? [rel] : [];
  });
}

export function importGraph(root: string, dirs: readonly string[]): ImportGraph {
  const graph: ImportGraph = new Map();
  for (const file of dirs.flatMap((d) => tsFiles(root, d))) {
    const targets = relativeImports(readFileSync(path.join(root, file), 'utf8')).map((spec) =>
      path.normalize(path.join(path.dirname(file), spec.replace(/\.js$/, '.ts'))),
    );
    graph.set(file, new Set(targets));
  }
  return graph;
}

/** Every import edge from a file under `from` to a file under `to` ("a.ts -> b.ts"). */
export function importsAcross(graph: ImportGraph, from: string, to: string): string[] {
  const under = (file: string, dir: string) => file.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
  return [...graph].flatMap(([file, targets]) => (under(file, from) ? [...targets].filter((t) => under(t, to)).map((t) => `${file} -> ${t}`) : []));
}

/**
 * Cycles between directories: the strongly connected components (Tarjan) of the graph whose
 * nodes are the files' directories, each with the edges that close it. Empty when the
 * directories form layers.
 */
export function directoryCycles(graph: ImportGraph): Array<{ dirs: string[]; edges: string[] }> {
  const dirEdges = new Map<string, Map<string, string[]>>();
  for (const [file, targets] of graph)
    for (const t of targets) {
      const a = path.dirname(file);
      const b = path.dirname(t);
      if (a === b) continue;
      if (!dirEdges.has(a)) dirEdges.set(a, new Map());
      const why = dirEdges.get(a)!;
      why.set(b, [...(why.get(b) ?? []), `${file} -> ${t}`]);
    }
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of dirEdges.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) components.push(component.sort());
    }
  };
  for (const v of dirEdges.keys()) if (!index.has(v)) visit(v);
  return components.map((dirs) => ({
    dirs,
    edges: dirs.flatMap((a) => dirs.flatMap((b) => dirEdges.get(a)?.get(b) ?? [])),
  }));
}
