// Browser interop scenarios, run inside a fresh network namespace (only `lo`) by
// tests/browser.rs: starts our server, native clients and Debian's Chromium (headless, fake
// camera), drives the web page, and prints one RESULT line per scenario. Exits non-zero on
// any failed check. Usage: node run.js SCENARIO SERVER_BIN CLIENT_BIN
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [scenario, serverBin, clientBin] = process.argv.slice(2);
const children = [];
const limitMs = scenario === 'long-call' ? 150_000 : 100_000;
const deadline = setTimeout(() => fail(`scenario took longer than ${limitMs} ms`), limitMs);

function fail(why) {
  console.error(`FAIL ${scenario}: ${why}`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
}

function check(cond, why) {
  if (!cond) fail(why);
}

/// Starts a process; collects its stdout lines; `waitLine(prefix, pred)` resolves on a match.
function start(name, bin, args) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  children.push(child);
  const lines = [];
  const waiters = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of waiters.slice()) if (w.test(line)) { waiters.splice(waiters.indexOf(w), 1); w.ok(line); }
    }
  });
  child.stderr.on('data', (d) => process.stderr.write(`[${name}] ${d}`));
  return {
    child,
    lines,
    waitLine(prefix, pred = () => true, ms = 30_000) {
      const test = (l) => l.startsWith(prefix) && pred(l);
      const seen = lines.find(test);
      if (seen) return Promise.resolve(seen);
      return new Promise((ok) => {
        const timer = setTimeout(() => fail(`${name}: no ${prefix} line in ${ms} ms; stdout:\n${lines.join('\n')}`), ms);
        timer.unref();
        waiters.push({ test, ok: (line) => { clearTimeout(timer); ok(line); } });
      });
    },
  };
}

const field = (line, key) => (line.match(new RegExp(`(?:^| )${key}=(\\S+)`)) || [])[1];

async function until(page, fn, arg, what, ms = 30_000) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
  } catch (e) {
    const st = await page.evaluate(() => JSON.stringify(window.pcState)).catch(() => '?');
    fail(`${what} within ${ms} ms; page state ${st}`);
  }
}

async function openPage(browser, port, name) {
  const context = await browser.newContext({ permissions: ['camera'] });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page ${name}] ${e}`));
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.fill('#name', name);
  await page.click('#signin button');
  await until(page, () => window.pcState.myId !== null, null, `${name} signs in`);
  return page;
}

const peerIdByName = (page, name) =>
  page.evaluate((n) => Number(Object.entries(window.pcState.peers).find(([, v]) => v === n)?.[0]), name);

// Opus both ways: the page has received 150 packets (3 s) and the native side 150 too;
// the page's concealed share of what it received, from getStats.
async function audioBothWays(page, native) {
  await until(page, () => (window.pcState.audio?.packetsReceived || 0) >= 150, null, 'page receives audio');
  const stats = await native.waitLine('STATS', (l) => Number(field(l, 'audio_recv')) >= 150);
  const a = (await page.evaluate(() => window.pcState)).audio;
  return {
    page_audio_packets: a.packetsReceived,
    page_concealed_ratio: (a.concealedSamples / Math.max(1, a.totalSamplesReceived)).toFixed(4),
    native_audio_recv: field(stats, 'audio_recv'), native_concealed_ms: field(stats, 'concealed_ms'),
  };
}

async function main() {
  const server = start('server', serverBin, ['--bind', '127.0.0.1', '--port', '0']);
  const port = field((await server.waitLine('peerconnection_server listening')).replace(/.*:/, 'port='), 'port');
  const native = (name, extra) => start(name, clientBin, ['--headless', '--server', '127.0.0.1', '--port', port,
    '--ice-ip', '127.0.0.1', '--name', name, '--resolution', '640x480', '--video-source', 'test', '--stats', ...extra]);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream=fps=30', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
      // The page's microphone plays this WAV file when the test gives one.
      ...(process.env.PC_FAKE_AUDIO ? [`--use-file-for-fake-audio-capture=${process.env.PC_FAKE_AUDIO}`] : [])],
  });
  const result = { scenario };
  if (scenario === 'browser-calls-native') {
    const record = process.env.PC_NATIVE_AUDIO_RECORD ? ['--audio-record', process.env.PC_NATIVE_AUDIO_RECORD] : [];
    const bob = native('bob', ['--duration', '60', ...record]);
    await bob.waitLine('SIGNED_IN');
    const page = await openPage(browser, port, 'web');
    await until(page, () => Object.values(window.pcState.peers).includes('bob'), null, 'bob on the page list');
    await page.click('#peers button');
    await until(page, () => window.pcState.framesDecoded >= 60, null, 'page decodes 60 frames');
    const stats = await bob.waitLine('STATS', (l) => Number(field(l, 'decoded')) >= 60);
    const audio = await audioBothWays(page, bob);
    await page.click('#hangup');
    const end = await bob.waitLine('CALL_ENDED');
    check(/BYE/.test(end), `native learns the hang-up from BYE: ${end}`);
    check(Number(field(end, 'frames_decoded')) >= 60, `native decoded: ${end}`);
    const st = await page.evaluate(() => window.pcState);
    check(!st.inCall && Object.values(st.peers).includes('bob'), 'page back on the list with bob');
    await bob.waitLine('STATS', (l) => field(l, 'call') === '-' && field(l, 'state') === 'CONNECTED');
    Object.assign(result, {
      page_decoded: st.framesDecoded, native_decoded: field(end, 'frames_decoded'), codec: st.codec,
      page_first_frame_ms: st.firstFrameMs, native_first_frame_ms: field(end, 'first_frame_ms'),
      native_stats_decoded: field(stats, 'decoded'), ...audio,
    });
  } else if (scenario === 'native-calls-browser') {
    const page = await openPage(browser, port, 'web');
    const alice = native('alice', ['--autocall', '--duration', '60']);
    await until(page, () => window.pcState.inCall, null, 'the page takes the call');
    await until(page, () => window.pcState.framesDecoded >= 60, null, 'page decodes 60 frames');
    await alice.waitLine('STATS', (l) => Number(field(l, 'decoded')) >= 60);
    const audio = await audioBothWays(page, alice);
    alice.child.kill('SIGINT'); // the native side hangs up (BYE), signs out and exits
    const end = await alice.waitLine('CALL_ENDED');
    check(Number(field(end, 'frames_decoded')) >= 60, `native decoded: ${end}`);
    await until(page, () => !window.pcState.inCall && window.pcState.callsEnded === 1, null, 'page back to the list');
    const st = await page.evaluate(() => window.pcState);
    Object.assign(result, {
      page_decoded: st.framesDecoded, native_decoded: field(end, 'frames_decoded'), codec: st.codec,
      page_first_frame_ms: st.firstFrameMs, native_first_frame_ms: field(end, 'first_frame_ms'),
      ...audio,
    });
  } else if (scenario === 'long-call') {
    // A call held for more than 60 s (a Chromium regression once dropped str0m full-ICE
    // calls after about 10 s): frames must keep flowing both ways to the end.
    const bob = native('bob', ['--duration', '120']);
    await bob.waitLine('SIGNED_IN');
    const page = await openPage(browser, port, 'web');
    await until(page, () => Object.values(window.pcState.peers).includes('bob'), null, 'bob on the page list');
    await page.click('#peers button');
    await until(page, () => window.pcState.framesDecoded >= 30, null, 'the call starts');
    const t0 = Date.now();
    const f0 = await page.evaluate(() => window.pcState.framesDecoded);
    await new Promise((ok) => setTimeout(ok, 65_000));
    const held = (Date.now() - t0) / 1000;
    const st = await page.evaluate(() => window.pcState);
    const last = bob.lines.filter((l) => l.startsWith('STATS')).pop();
    check(st.inCall && field(last, 'call') !== '-', `call still up after ${held} s: ${last}`);
    const pageFps = (st.framesDecoded - f0) / held;
    check(pageFps >= 20, `page decoded ${pageFps.toFixed(1)} fps over the last ${held} s`);
    check(Number(field(last, 'recv_fps')) >= 20, `native still receiving: ${last}`);
    await page.click('#hangup');
    const end = await bob.waitLine('CALL_ENDED');
    Object.assign(result, {
      held_s: held.toFixed(1), page_fps: pageFps.toFixed(1), page_decoded: st.framesDecoded,
      native_decoded: field(end, 'frames_decoded'), codec: st.codec,
    });
  } else if (scenario === 'browser-calls-browser') {
    const a = await openPage(browser, port, 'web-a');
    const b = await openPage(browser, port, 'web-b');
    await until(a, () => Object.values(window.pcState.peers).includes('web-b'), null, 'b on a\'s list');
    const bId = await peerIdByName(a, 'web-b');
    await a.evaluate((id) => window.pcApi.call(id), bId);
    for (const [p, n] of [[a, 'a'], [b, 'b']]) {
      await until(p, () => window.pcState.framesDecoded >= 60, null, `${n} decodes 60 frames`);
    }
    await b.click('#hangup');
    for (const [p, n] of [[a, 'a'], [b, 'b']]) {
      await until(p, () => !window.pcState.inCall && Object.keys(window.pcState.peers).length === 1, null, `${n} back on the list`);
    }
    const sa = await a.evaluate(() => window.pcState);
    const sb = await b.evaluate(() => window.pcState);
    Object.assign(result, {
      a_decoded: sa.framesDecoded, b_decoded: sb.framesDecoded, codec: sa.codec,
      a_first_frame_ms: sa.firstFrameMs, b_first_frame_ms: sb.firstFrameMs,
    });
  } else {
    fail(`unknown scenario ${scenario}`);
  }
  check(result.codec === 'video/H264', `negotiated codec is H.264, got ${result.codec}`);
  console.log('RESULT ' + Object.entries(result).map(([k, v]) => `${k}=${v}`).join(' '));
  await browser.close();
  for (const c of children) c.kill('SIGKILL');
  clearTimeout(deadline);
}

main().catch((e) => fail(e.stack || String(e)));
