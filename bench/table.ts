// Shared output for benchmarks: a short aligned table, ratios against the in-run baseline.
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  baseline?: number; // same unit, measured in the same run
  // The ratio when it is not value ÷ baseline: e.g. the median of per-round paired ratios, which a
  // shared machine's load moves less than a ratio of two medians taken at different moments.
  ratio?: number;
  spread?: [number, number]; // lowest and highest per-round ratio
}

export function printTable(title: string, rows: BenchRow[]): void {
  const withSpread = rows.some((r) => r.spread);
  const lines = rows.map((r) => {
    const x = r.ratio ?? (r.baseline ? r.value / r.baseline : undefined);
    const ratio = x !== undefined ? x.toFixed(2) + 'x' : '';
    const base = r.baseline !== undefined ? r.baseline.toFixed(1) : '';
    const cols = [r.name, r.value.toFixed(1), base, r.unit, ratio];
    if (withSpread) cols.push(r.spread ? `${r.spread[0].toFixed(2)}–${r.spread[1].toFixed(2)}` : '');
    return cols;
  });
  const head = ['case', 'value', 'baseline', 'unit', 'ratio', ...(withSpread ? ['rounds'] : [])];
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cols: string[]) => cols.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(`\n${title}`);
  console.log(fmt(head));
  for (const l of lines) console.log(fmt(l));
}
