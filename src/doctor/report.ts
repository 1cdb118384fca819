// The result of `obd doctor`: one row per check. Only a blocker makes the command fail; a warning
// says something works worse than it could, info says what was found.
export type CheckStatus = 'ok' | 'info' | 'warn' | 'blocker';

export interface Check {
  /** What was checked, e.g. "kernel: loop". */
  name: string;
  status: CheckStatus;
  /** What was found, and for a blocker or a warning what to do about it. */
  detail: string;
}

export interface DoctorReport {
  ok: boolean; // no blocker
  checks: Check[];
}

export function report(checks: Check[]): DoctorReport {
  return { ok: !checks.some((c) => c.status === 'blocker'), checks };
}

const MARK: Record<CheckStatus, string> = { ok: 'ok', info: 'info', warn: 'WARN', blocker: 'BLOCKER' };

/** A plain-text table for people; long details wrap under their column. */
export function renderTable(r: DoctorReport, width = 110): string {
  const nameW = Math.max(5, ...r.checks.map((c) => c.name.length));
  const statW = 7;
  const detailW = Math.max(30, width - nameW - statW - 4);
  const lines = [`${'CHECK'.padEnd(nameW)}  ${'STATUS'.padEnd(statW)}  DETAIL`];
  for (const c of r.checks) {
    const wrapped = wrap(c.detail, detailW);
    lines.push(`${c.name.padEnd(nameW)}  ${MARK[c.status].padEnd(statW)}  ${wrapped[0] ?? ''}`);
    for (const more of wrapped.slice(1)) lines.push(`${''.padEnd(nameW)}  ${''.padEnd(statW)}  ${more}`);
  }
  const blockers = r.checks.filter((c) => c.status === 'blocker').length;
  const warns = r.checks.filter((c) => c.status === 'warn').length;
  lines.push('', blockers ? `${blockers} blocker(s): obd cannot work on this node until they are fixed` : `no blockers${warns ? ` (${warns} warning(s))` : ''}`);
  return lines.join('\n') + '\n';
}

function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(line);
  return out;
}
