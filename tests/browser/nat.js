// The web page behind a NAT (tests/nat.rs runs this inside the lab's host namespace): opens
// the page our server serves at SERVER_URL, calls the native client named PEER, waits for
// 60 decoded frames, and prints one RESULT line with the page's selected candidate pair
// (local and remote candidate types, from getStats). Usage: node nat.js SERVER_URL PEER
'use strict';
const { chromium } = require('playwright-core');
const { untilWith, labChromiumArgs } = require('./common');

const [url, peer] = process.argv.slice(2);
const deadline = setTimeout(() => fail('took longer than 60 s'), 60_000);

function fail(why) {
  console.error(`FAIL nat.js: ${why}`);
  process.exit(1);
}

const until = untilWith(fail);

async function main() {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: labChromiumArgs(url),
  });
  const context = await browser.newContext({ permissions: ['camera'] });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page] ${e}`));
  await page.goto(url);
  const servers = await page.evaluate(() => fetch('/ice-servers.json').then((r) => r.json()));
  await page.fill('#name', 'web');
  await page.click('#signin button');
  await until(page, (p) => Object.values(window.pcState.peers).includes(p), peer, `${peer} on the list`);
  await page.click('#peers button');
  await until(page, () => window.pcState.framesDecoded >= 60, null, 'page decodes 60 frames', 40_000);
  // The selected pair, as the page's own stats name it.
  const pair = await page.evaluate(async () => {
    const pc = window.pcApi && window.pcApi.pc ? window.pcApi.pc() : null;
    if (!pc) return '?/?';
    const stats = await pc.getStats();
    let transport = null;
    stats.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) transport = s; });
    const id = transport ? transport.selectedCandidatePairId : null;
    const p = id ? stats.get(id) : null;
    if (!p) return '?/?';
    return `${stats.get(p.localCandidateId).candidateType}/${stats.get(p.remoteCandidateId).candidateType}`;
  });
  // Three more seconds, so the native side has decoded as much before the hang-up.
  await new Promise((ok) => setTimeout(ok, 3000));
  const st = await page.evaluate(() => window.pcState);
  console.log(`RESULT page_decoded=${st.framesDecoded} codec=${st.codec} pair=${pair} ice_servers=${servers.length}`);
  await page.click('#hangup');
  await browser.close();
  clearTimeout(deadline);
}

main().catch((e) => fail(e.stack || String(e)));
