// Browser interop scenarios, run inside a fresh network namespace (only `lo`) by
// tests/browser.rs: starts our server, native clients and Debian's Chromium (headless, fake
// camera), drives the web page, and prints one RESULT line per scenario. Exits non-zero on
// any failed check. Usage: node run.js SCENARIO SERVER_BIN CLIENT_BIN
// The https-* scenarios also need TLS_CERT and TLS_KEY (PEM files) in the environment.
'use strict';
const { spawn } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');
const { untilWith } = require('./common');

const [scenario, serverBin, clientBin] = process.argv.slice(2);
const children = [];
const limitMs = scenario === 'long-call' ? 150_000 : 100_000;
const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');
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
  const stdin = args.includes('--chat-stdin') ? 'pipe' : 'ignore';
  const child = spawn(bin, args, { stdio: [stdin, 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
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

const until = untilWith(fail);

async function openPage(browser, port, name) {
  const context = await browser.newContext({ permissions: ['camera'], acceptDownloads: true });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`[page ${name}] ${e}`));
  await page.goto(pageUrl || `http://127.0.0.1:${port}/`);
  await page.fill('#name', name);
  await page.click('#signin button');
  await until(page, () => window.pcState.myId !== null, null, `${name} signs in`);
  return page;
}

const peerIdByName = (page, name) =>
  page.evaluate((n) => Number(Object.entries(window.pcState.peers).find(([, v]) => v === n)?.[0]), name);

/// The page's address: plain HTTP on 127.0.0.1 unless a scenario serves it over HTTPS.
let pageUrl = null;

// Opus both ways: the page has received 150 packets (3 s) and the native side 150 too;
// the page's concealed share of what it received over the next 150 packets, from getStats
// (the call's first seconds, while NetEq settles, are left out).
async function audioBothWays(page, native) {
  await until(page, () => (window.pcState.audio?.packetsReceived || 0) >= 150, null, 'page receives audio');
  const stats = await native.waitLine('STATS', (l) => Number(field(l, 'audio_recv')) >= 150);
  const a0 = (await page.evaluate(() => window.pcState)).audio;
  await until(page, (n) => (window.pcState.audio?.packetsReceived || 0) >= n, a0.packetsReceived + 150,
    'page receives 150 more audio packets');
  const a = (await page.evaluate(() => window.pcState)).audio;
  const concealed = a.concealedSamples - a0.concealedSamples;
  const received = a.totalSamplesReceived - a0.totalSamplesReceived;
  return {
    page_audio_packets: a.packetsReceived,
    page_concealed_ratio: (concealed / Math.max(1, received)).toFixed(4),
    native_audio_recv: field(stats, 'audio_recv'), native_concealed_ms: field(stats, 'concealed_ms'),
  };
}

async function main() {
  const https = scenario.startsWith('https-');
  // Over HTTPS the page comes from 127.0.0.2: not `localhost`, so only HTTPS makes it a
  // secure context that may open the camera.
  const tlsArgs = https
    ? ['--tls-port', '0', '--tls-cert', process.env.TLS_CERT, '--tls-key', process.env.TLS_KEY]
    : [];
  const server = start('server', serverBin,
    ['--bind', https ? '127.0.0.2' : '127.0.0.1', '--port', '0', ...tlsArgs]);
  const port = field((await server.waitLine('peerconnection_server listening on')).replace(/.*:/, 'port='), 'port');
  // Chromium trusts the test's certificate by its public key (SPKI SHA-256), as it would a
  // pinned key, rather than ignoring every certificate error.
  const trust = [];
  if (https) {
    const line = await server.waitLine('peerconnection_server listening for TLS on');
    pageUrl = `https://127.0.0.2:${line.replace(/.*:/, '')}/`;
    const cert = new crypto.X509Certificate(fs.readFileSync(process.env.TLS_CERT));
    const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
    trust.push(`--ignore-certificate-errors-spki-list=${crypto.createHash('sha256').update(spki).digest('base64')}`);
  }
  const native = (name, extra) => start(name, clientBin, ['--headless', '--server', '127.0.0.1', '--port', port,
    '--ice-ip', '127.0.0.1', '--name', name, '--resolution', '640x480', '--video-source', 'test', '--stats', ...extra]);
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream=fps=30', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns', ...trust,
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
  } else if (scenario === 'browser-calls-browser' || scenario === 'https-browser-calls-browser') {
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
    if (https) {
      const where = await a.evaluate(() => [location.protocol, location.hostname, window.isSecureContext].join(','));
      check(where === 'https:,127.0.0.2,true', `the page is a secure context on 127.0.0.2: ${where}`);
      result.page = where;
    }
    Object.assign(result, {
      a_decoded: sa.framesDecoded, b_decoded: sb.framesDecoded, codec: sa.codec,
      a_first_frame_ms: sa.firstFrameMs, b_first_frame_ms: sb.firstFrameMs,
    });
  } else if (scenario === 'data-browser-calls-native' || scenario === 'data-native-calls-browser') {
    // Chat both ways and a 10 MB file each way on the data channels, byte-identical.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pc-data-'));
    const inbox = path.join(dir, 'inbox');
    fs.mkdirSync(inbox);
    const nativeFile = path.join(dir, 'from-native.bin');
    const pageFile = path.join(dir, 'from-page.bin');
    const nativeBytes = crypto.randomBytes(10_000_000);
    const pageBytes = crypto.randomBytes(10_000_000);
    fs.writeFileSync(nativeFile, nativeBytes);
    fs.writeFileSync(pageFile, pageBytes);
    const nativeCalls = scenario === 'data-native-calls-browser';
    let page;
    let bob;
    const files = ['--chat-stdin', '--receive-dir', inbox, '--send-file', nativeFile, '--duration', '90'];
    if (nativeCalls) {
      page = await openPage(browser, port, 'web');
      bob = native('bob', ['--autocall', ...files]);
    } else {
      bob = native('bob', files);
      await bob.waitLine('SIGNED_IN');
      page = await openPage(browser, port, 'web');
      await until(page, () => Object.values(window.pcState.peers).includes('bob'), null, 'bob on the page list');
      await page.click('#peers button');
    }
    await bob.waitLine('CHAT_OPEN');
    await until(page, () => window.pcChannels.chatOpen, null, 'the page\'s chat channel opens');
    // Chat: the page's text box to the native CHAT line, native stdin to the page's log.
    await page.fill('#chattext', 'hello "native" \u00e9');
    await page.press('#chattext', 'Enter');
    const chat = await bob.waitLine('CHAT ');
    check(chat.endsWith('text="hello \\"native\\" \u00e9"'), `native got the page's line: ${chat}`);
    bob.child.stdin.write('hello page\n');
    await until(page, () => window.pcChannels.log.includes('peer: hello page'), null, 'the page shows the native line');
    // Files: the native one arrives as a download link; the page's goes through the picker.
    await page.setInputFiles('#file', pageFile);
    const got = await bob.waitLine('FILE_RECEIVED', () => true, 60_000);
    const sent = await bob.waitLine('FILE_SENT', () => true, 60_000);
    await until(page, () => window.pcChannels.received.length === 1 && window.pcChannels.sent.length === 1,
      null, 'the page received and sent its files', 60_000);
    const ch = await page.evaluate(() => window.pcChannels);
    check(ch.failed.length === 0, `no failed transfer: ${JSON.stringify(ch.failed)}`);
    check(field(got, 'sha256') === sha256(pageBytes), `native saved the page's file: ${got}`);
    check(sha256(fs.readFileSync(path.join(inbox, 'from-page.bin'))) === sha256(pageBytes), 'saved bytes identical');
    check(field(sent, 'sha256') === sha256(nativeBytes), `native sent its file: ${sent}`);
    check(ch.received[0].sha256 === sha256(nativeBytes) && ch.received[0].name === 'from-native.bin',
      `page received the native file: ${JSON.stringify(ch.received)}`);
    const link = await page.getAttribute('#downloads a', 'download');
    check(link === 'from-native.bin', `a download link: ${link}`);
    const download = await Promise.all([page.waitForEvent('download'), page.click('#downloads a')]);
    const savedPath = await download[0].path();
    check(sha256(fs.readFileSync(savedPath)) === sha256(nativeBytes), 'the downloaded file is byte-identical');
    const st = await page.evaluate(() => window.pcState);
    Object.assign(result, {
      codec: st.codec, native_received_mb_per_s: field(got, 'mb_per_s'), native_sent_mb_per_s: field(sent, 'mb_per_s'),
      page_received_mb_per_s: ch.received[0].mbPerS.toFixed(1), page_sent_mb_per_s: ch.sent[0].mbPerS.toFixed(1),
    });
    fs.rmSync(dir, { recursive: true, force: true });
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
