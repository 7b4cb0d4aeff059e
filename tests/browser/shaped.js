// Two Chromium pages on the NAT lab's links (tests/nat.rs runs this, as a comparison for
// the native client on the same shaped or impaired path): page A runs in network namespace
// NS_A, page B in NS_B, each in its own headless Chromium started through `ip netns exec`
// (Playwright drives both over pipes, so this script itself needs no network). Both send
// CLIP (a Y4M file) as their camera and Chromium's fake microphone; A calls B through the
// signaling server at SERVER_URL. Prints CALLING when A places the call, one SAMPLE line a
// second for SECONDS seconds (per-second figures from each page's getStats), then RESULT.
// Usage: node shaped.js SERVER_URL NS_A NS_B CLIP SECONDS
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');
const { untilWith, labChromiumArgs } = require('./common');

const [url, nsA, nsB, clip, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const deadline = setTimeout(() => fail(`took longer than ${seconds + 90} s`), (seconds + 90) * 1000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-shaped-'));
const browsers = [];

function fail(why) {
  console.error(`FAIL shaped.js: ${why}`);
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(1); // Playwright kills the browsers' process groups on exit
}

const until = untilWith(fail);

/// A browser inside namespace `ns` (a wrapper script as its executable), its page signed in.
async function openPage(ns, name) {
  const wrapper = path.join(dir, `chromium-${name}`);
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} /usr/bin/chromium "$@"\n`, { mode: 0o755 });
  const browser = await chromium.launch({
    executablePath: wrapper,
    headless: true,
    args: labChromiumArgs(url, [`--use-file-for-fake-video-capture=${clip}`]),
  });
  browsers.push(browser);
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page ${name}] ${e}`));
  await page.goto(url);
  await page.fill('#name', name);
  await page.click('#signin button');
  await until(page, () => window.pcState.myId !== null, null, `${name} signs in`);
  return page;
}

/// The counters a page's getStats holds now (zeros before its call exists).
const snap = (page) => page.evaluate(async () => {
  const o = {
    now: performance.now(), sent: 0, enc: 0, pliIn: 0, nackIn: 0, dec: 0, pliOut: 0, nackOut: 0,
    lost: 0, recvd: 0, conc: 0, samples: 0, avail: null, rtt: null, width: null, qlr: null, target: null,
  };
  const pc = window.pcApi.pc();
  if (!pc) return o;
  const st = await pc.getStats();
  let pairId = null;
  st.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      o.sent += s.bytesSent || 0; o.enc += s.framesEncoded || 0;
      o.pliIn += s.pliCount || 0; o.nackIn += s.nackCount || 0;
      o.width = s.frameWidth ?? o.width; o.qlr = s.qualityLimitationReason || o.qlr;
      o.target = s.targetBitrate ?? o.target;
    }
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      o.dec = s.framesDecoded || 0; o.pliOut = s.pliCount || 0; o.nackOut = s.nackCount || 0;
      o.lost = s.packetsLost || 0; o.recvd = s.packetsReceived || 0;
    }
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      o.conc = s.concealedSamples || 0; o.samples = s.totalSamplesReceived || 0;
    }
    if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
  });
  const p = pairId && st.get(pairId);
  if (p) { o.avail = p.availableOutgoingBitrate ?? null; o.rtt = p.currentRoundTripTime ?? null; }
  return o;
});

const kbps = (v) => (v === null || v === undefined ? '-' : Math.round(v / 1000));

async function main() {
  const b = await openPage(nsB, 'web-b');
  const a = await openPage(nsA, 'web-a');
  await until(a, () => Object.values(window.pcState.peers).includes('web-b'), null, 'b on a\'s list');
  const bId = await a.evaluate(() => Number(Object.entries(window.pcState.peers).find(([, v]) => v === 'web-b')[0]));
  const t0 = Date.now();
  await a.evaluate((id) => window.pcApi.call(id), bId);
  console.log('CALLING');
  let [pa, pb] = await Promise.all([snap(a), snap(b)]);
  for (let k = 1; k <= seconds; k++) {
    await new Promise((ok) => setTimeout(ok, Math.max(0, t0 + k * 1000 - Date.now())));
    const [sa, sb] = await Promise.all([snap(a), snap(b)]);
    const rate = (s, p, key) => (s[key] - p[key]) / Math.max(0.001, (s.now - p.now) / 1000);
    console.log(`SAMPLE t=${((Date.now() - t0) / 1000).toFixed(1)}`
      + ` a_sent_kbps=${Math.round(rate(sa, pa, 'sent') * 8 / 1000)} a_avail_kbps=${kbps(sa.avail)}`
      + ` a_target_kbps=${kbps(sa.target)} a_width=${sa.width ?? '-'} a_qlr=${sa.qlr ?? '-'}`
      + ` b_recv_fps=${rate(sb, pb, 'dec').toFixed(1)} b_pli=${sb.pliOut} b_nack=${sb.nackOut}`
      + ` b_sent_kbps=${Math.round(rate(sb, pb, 'sent') * 8 / 1000)} a_recv_fps=${rate(sa, pa, 'dec').toFixed(1)}`
      + ` a_pli=${sa.pliOut} a_nack=${sa.nackOut}`
      + ` rtt_ms=${sa.rtt === null ? '-' : Math.round(sa.rtt * 1000)}`);
    [pa, pb] = [sa, sb];
  }
  const st = await a.evaluate(() => window.pcState);
  const concealed = (s) => (s.conc / Math.max(1, s.samples)).toFixed(4);
  const result = (`RESULT a_decoded=${pa.dec} b_decoded=${pb.dec} codec=${st.codec}`
    + ` a_pli=${pa.pliOut} b_pli=${pb.pliOut} a_nack=${pa.nackOut} b_nack=${pb.nackOut}`
    + ` a_lost=${pa.lost} b_lost=${pb.lost} a_received=${pa.recvd} b_received=${pb.recvd}`
    + ` a_concealed_ratio=${concealed(pa)} b_concealed_ratio=${concealed(pb)}`);
  await a.click('#hangup');
  await Promise.all(browsers.map((br) => br.close()));
  clearTimeout(deadline);
  fs.rmSync(dir, { recursive: true, force: true });
  // Last: the test stops this script once it has read it.
  console.log(result);
}

main().catch((e) => fail(e.stack || String(e)));
