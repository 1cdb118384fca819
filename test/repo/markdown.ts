// Just enough Markdown for link checking: the links outside code, and the anchors headings get
// (GitHub's rule: lower case, punctuation dropped, spaces become hyphens, repeats get -1, -2, …).

export interface MarkdownLink {
  line: number;
  target: string;
}

/** Lines with fenced code blocks blanked, so that their text is never read as links or headings. */
function proseLines(text: string): string[] {
  let fence: string | undefined;
  return text.split('\n').map((l) => {
    const m = /^\s*(```+|~~~+)/.exec(l);
    if (m) {
      if (fence === undefined) fence = m[1][0];
      else if (m[1][0] === fence) fence = undefined;
      return '';
    }
    return fence === undefined ? l : '';
  });
}

export function markdownLinks(text: string): MarkdownLink[] {
  const out: MarkdownLink[] = [];
  proseLines(text).forEach((raw, i) => {
    const l = raw.replace(/`[^`]*`/g, ''); // inline code
    for (const m of l.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) out.push({ line: i + 1, target: m[1] });
    const ref = /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(\s|$)/.exec(l);
    if (ref) out.push({ line: i + 1, target: ref[1] });
  });
  return out;
}

export function headingAnchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const l of proseLines(text)) {
    const m = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(l);
    if (!m) continue;
    const base = m[1]
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}
