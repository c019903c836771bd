// `runbook report` pages in headless Chromium: did every chart draw? One browser serves every batch of pages.
// Usage: node report_charts.mjs CONFIG_JSON
//   config: chromium; profile_dir; timeout_ms; screenshots (optional folder)
// Then reads one JSON line per batch on stdin, {urls: [file:// of the reports]}, and prints one JSON line per batch:
//   {pages: [{url, charts: [{id, title, series, legend, width, height, drawn: {traces, points, bars, lines}}],
//             requests: [non-file URLs the page asked for], error?}]}
// It closes the browser and exits when stdin closes.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const timeout = cfg.timeout_ms || 15000;
const context = await chromium.launchPersistentContext(cfg.profile_dir, {
  executablePath: cfg.chromium || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1200, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(timeout);
let result = null;
let shot = 0;
page.on('request', (req) => { if (result && !req.url().startsWith('file:') && !req.url().startsWith('data:')) result.requests.push(req.url()); });

async function draw(url) {
  result = { url, charts: [], requests: [] };
  try {
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForFunction(() => {
      const divs = [...document.querySelectorAll('.plotly-graph-div')];
      return divs.length > 0 && divs.every((d) => d.querySelector('svg.main-svg'));
    }, null, { timeout, polling: 100 });
    result.charts = await page.evaluate(() => [...document.querySelectorAll('.plotly-graph-div')].map((gd) => {
      const svg = gd.querySelector('svg.main-svg');
      const box = svg.getBoundingClientRect();
      const lines = [...gd.querySelectorAll('.scatterlayer .trace path.js-line')].filter((p) => (p.getAttribute('d') || '').length > 2);
      return {
        id: gd.id,
        title: (gd.querySelector('.gtitle') || {}).textContent || '',
        series: (gd.data || []).map((t) => t.name),
        legend: [...gd.querySelectorAll('.legendtext')].map((e) => e.textContent),
        width: box.width,
        height: box.height,
        drawn: {
          traces: gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
          points: gd.querySelectorAll('.scatterlayer path.point').length,
          bars: [...gd.querySelectorAll('.barlayer path')].filter((p) => (p.getAttribute('d') || '').length > 2).length,
          lines: lines.length,
        },
      };
    }));
    if (cfg.screenshots) await page.screenshot({ path: `${cfg.screenshots}/report-${shot++}.png`, fullPage: true });
  } catch (e) {
    result.error = String(e).split('\n')[0];
  }
  return result;
}

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const pages = [];
  for (const url of JSON.parse(line).urls) pages.push(await draw(url));
  console.log(JSON.stringify({ pages }));
}
await context.close();
