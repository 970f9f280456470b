/**
 * Prometheus text exposition format (version 0.0.4), pure: metric families in, text out.
 * https://prometheus.io/docs/instrumenting/exposition_formats/
 */

type MetricType = 'counter' | 'gauge' | 'summary' | 'untyped';

export interface Sample {
  labels?: Readonly<Record<string, string>>;
  value: number | bigint;
  /** for summaries: `_sum` or `_count` after the family name */
  suffix?: '_sum' | '_count';
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: readonly Sample[];
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export class MetricsFormatError extends Error {
  override name = 'MetricsFormatError';
}

export function formatPrometheus(families: readonly MetricFamily[]): string {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const f of families) {
    if (!METRIC_NAME.test(f.name)) throw new MetricsFormatError(`metric name ${JSON.stringify(f.name)} is not valid`);
    if (seen.has(f.name)) throw new MetricsFormatError(`metric ${f.name} is declared twice`);
    seen.add(f.name);
    if (f.type === 'counter' && !f.name.endsWith('_total')) throw new MetricsFormatError(`counter ${f.name} must end in _total`);
    lines.push(`# HELP ${f.name} ${f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    lines.push(`# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      if (s.suffix && f.type !== 'summary') throw new MetricsFormatError(`${f.name}: only a summary has ${s.suffix} samples`);
      lines.push(`${f.name}${s.suffix ?? ''}${formatLabels(f.name, s.labels)} ${formatValue(s.value)}`);
    }
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

function formatLabels(metric: string, labels: Readonly<Record<string, string>> | undefined): string {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return '';
  for (const [k] of entries)
    if (!LABEL_NAME.test(k) || k.startsWith('__')) throw new MetricsFormatError(`${metric}: label name ${JSON.stringify(k)} is not valid`);
  return `{${entries.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatValue(v: number | bigint): string {
  if (typeof v === 'bigint') return v.toString();
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}
