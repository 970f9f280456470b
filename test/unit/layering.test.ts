import { describe, expect, it } from 'vitest';
import { directoryCycles, importGraph, importsAcross, relativeImports, type ImportGraph } from '../support/import-graph.js';
import { repoRoot } from '../../controller/util/paths.js';

/*
 * The layers of the code, checked on its imports: maps/ (the layouts shared with the C structs)
 * depends on nothing of the agent's; no two directories under controller/ import each other,
 * however indirectly (the flow etcd -> leases -> desired state -> reconciler -> datapath runs
 * one way); and the libbpf binding is used through its public surface alone.
 */
const graph = importGraph(repoRoot(), ['controller', 'maps']);

const graphOf = (edges: Record<string, string[]>): ImportGraph => new Map(Object.entries(edges).map(([f, ts]) => [f, new Set(ts)]));

describe('the import scanner', () => {
  it('finds static imports, re-exports, type imports, dynamic and side-effect imports, and skips packages', () => {
    const src = [
      "import { a } from './a.js';",
      "import type { B } from '../b/b.js';",
      "import {\n  c,\n  d,\n} from '../../maps/c.js';",
      "export { e } from './e.js';",
      "const f = await import('../f.js');",
      "import './side-effect.js';",
      "import koffi from 'koffi';",
      "import { readFileSync } from 'node:fs';",
    ].join('\n');
    expect(relativeImports(src).sort()).toEqual(['../../maps/c.js', '../b/b.js', '../f.js', './a.js', './e.js', './side-effect.js']);
  });

  it('reports a cycle between directories, however long, with the edges that close it', () => {
    const cyclic = graphOf({
      'c/a/x.ts': ['c/b/y.ts'],
      'c/b/y.ts': ['c/d/z.ts'],
      'c/d/z.ts': ['c/a/w.ts'],
      'c/a/w.ts': [],
      'c/e/v.ts': ['c/a/x.ts'],
    });
    expect(directoryCycles(cyclic)).toEqual([{ dirs: ['c/a', 'c/b', 'c/d'], edges: ['c/a/x.ts -> c/b/y.ts', 'c/b/y.ts -> c/d/z.ts', 'c/d/z.ts -> c/a/w.ts'] }]);
    expect(directoryCycles(graphOf({ 'c/a/x.ts': ['c/b/y.ts', 'c/a/w.ts'], 'c/a/w.ts': ['c/a/x.ts'], 'c/b/y.ts': [] }))).toEqual([]);
  });
});

describe('layers of this repository', () => {
  it('reads the real sources (the scanner found the binding and its importers)', () => {
    expect(graph.get('maps/typed-map.ts')).toBeDefined();
    expect(importsAcross(graph, 'controller/dataplane', 'controller/bpf')).toContain('controller/dataplane/attach.ts -> controller/bpf/libbpf.ts');
  });

  it('maps/ imports nothing from controller/', () => {
    expect(importsAcross(graph, 'maps', 'controller')).toEqual([]);
  });

  it('no directory cycle in controller/ and maps/ (dataplane -> reconcile, never back)', () => {
    expect(directoryCycles(graph)).toEqual([]);
    expect(importsAcross(graph, 'controller/reconcile', 'controller/dataplane')).toEqual([]);
  });

  it('outside controller/bpf, the binding is imported through libbpf.ts only', () => {
    const internal = importsAcross(graph, 'controller', 'controller/bpf').filter(
      (e) => !e.startsWith('controller/bpf/') && !e.endsWith(' -> controller/bpf/libbpf.ts'),
    );
    expect(internal).toEqual([]);
  });
});
