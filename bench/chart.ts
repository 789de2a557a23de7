// A horizontal bar chart of median latencies (log scale), as a self-contained SVG.
import type { Row } from './stats.ts';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function renderSvg(rows: Row[], machine: { cpus: number; cpuModel: string; memoryGiB: number }): string {
  const shown = rows.filter((r) => r.perSecond === undefined);
  const labelW = 360;
  const barW = 460;
  const rowH = 26;
  const top = 56;
  const height = top + shown.length * rowH + 40;
  const max = Math.max(...shown.map((r) => r.p50), 1);
  const min = Math.max(Math.min(...shown.map((r) => r.p50)), 1);
  const lo = Math.log10(min) - 0.3;
  const hi = Math.log10(max) + 0.1;
  const x = (v: number) => ((Math.log10(Math.max(v, 1)) - lo) / (hi - lo)) * barW;
  const bars = shown
    .map((r, i) => {
      const y = top + i * rowH;
      const w = Math.max(2, x(r.p50));
      const color =
        r.name.startsWith('baseline') ? '#888'
        : r.name.startsWith('docker') ? '#c66'
        : r.name.includes('back-to-back') ? '#d80'
        : r.name.includes('warm') || r.name.includes('paced') ? '#2a7'
        : '#47a';
      return (
        `<text x="${labelW - 8}" y="${y + 17}" text-anchor="end">${esc(r.name)}</text>` +
        `<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${color}"/>` +
        `<text x="${labelW + w + 6}" y="${y + 17}">${r.p50.toFixed(1)} ms (${r.ratio ?? '?'}×)</text>`
      );
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + barW + 140}" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="15" font-weight="bold">pybox: median latency per execution (log scale; × = ratio to the unsandboxed baseline)</text>
<text x="10" y="42" fill="#555">${esc(`${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB`)}</text>
${bars}
</svg>
`;
}
