// The web page as the caller restarts ICE (tests/nat.rs runs this inside the lab's host
// namespace): it calls the native client PEER, prints DECODING once 60 frames are decoded,
// then (while the test cuts the path) waits for its own ICE restart (pc.restartIce() after
// 2.5 s 'disconnected', or at 'failed'), prints RESTARTED, and once 60 more frames are
// decoded prints one RESULT line. Usage: node nat_restart.js SERVER_URL PEER
'use strict';
const { chromium } = require('playwright-core');
const { untilWith, labChromiumArgs } = require('./common');

const [url, peer] = process.argv.slice(2);
const deadline = setTimeout(() => fail('took longer than 70 s'), 70_000);

function fail(why) {
  console.error(`FAIL nat_restart.js: ${why}`);
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
  await page.fill('#name', 'web');
  await page.click('#signin button');
  await until(page, (p) => Object.values(window.pcState.peers).includes(p), peer, `${peer} on the list`);
  await page.click('#peers button');
  await until(page, () => window.pcState.framesDecoded >= 60, null, 'page decodes 60 frames', 40_000);
  console.log('DECODING');
  await until(page, () => window.pcState.iceRestarts >= 1, null, 'an ICE restart', 20_000);
  const at = await page.evaluate(() => window.pcState.framesDecoded);
  console.log(`RESTARTED decoded=${at}`);
  await until(page, (n) => window.pcState.framesDecoded >= n + 60, at, '60 frames after the restart', 20_000);
  const st = await page.evaluate(() => window.pcState);
  console.log(`RESULT decoded_at_restart=${at} page_decoded=${st.framesDecoded} ice_restarts=${st.iceRestarts} in_call=${st.inCall}`);
  await page.click('#hangup');
  await browser.close();
  clearTimeout(deadline);
}

main().catch((e) => fail(e.stack || String(e)));
