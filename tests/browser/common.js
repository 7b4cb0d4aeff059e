// What the browser scripts share: waiting on the page's state, and Chromium's flags for a
// page of our server in the network lab.
'use strict';

/** A wait for `fn(arg)` to hold in the page; past `ms` it ends the script through `fail`,
 * naming `what` and the page's state. */
function untilWith(fail) {
  return async function until(page, fn, arg, what, ms = 30_000) {
    try {
      await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
    } catch (e) {
      const st = await page.evaluate(() => JSON.stringify(window.pcState)).catch(() => '?');
      fail(`${what} within ${ms} ms; page state ${st}`);
    }
  };
}

/** Headless Chromium with a fake camera (and `extra` flags) for the page served at `url`. */
function labChromiumArgs(url, extra = []) {
  return ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream=fps=30', '--use-fake-ui-for-media-stream',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    ...extra,
    // The page is not on localhost: let it use the (fake) camera over plain HTTP.
    `--unsafely-treat-insecure-origin-as-secure=${new URL(url).origin}`];
}

module.exports = { untilWith, labChromiumArgs };
