// Shared output for benchmarks: a short aligned table, ratios against the in-run baseline.
export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  baseline?: number; // same unit, measured in the same run
}

export function printTable(title: string, rows: BenchRow[]): void {
  const lines = rows.map((r) => {
    const ratio = r.baseline ? (r.value / r.baseline).toFixed(2) + 'x' : '';
    const base = r.baseline !== undefined ? r.baseline.toFixed(1) : '';
    return [r.name, r.value.toFixed(1), base, r.unit, ratio];
  });
  const head = ['case', 'value', 'baseline', 'unit', 'ratio'];
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cols: string[]) => cols.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(`\n${title}`);
  console.log(fmt(head));
  for (const l of lines) console.log(fmt(l));
}
