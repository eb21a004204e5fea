// What the player scripts (hlsjs.mjs, ovenplayer.mjs) share: headless
// Chromium with a fresh profile and the flags DEVELOPERS.md lists, and a
// player page served from its own loopback HTTP server, as a site would
// serve it: another origin than streamd (so CORS is exercised), on a real
// loopback address (Chromium's Local Network Access lets a loopback page
// reach loopback servers).

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';

const FLAGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
  '--allow-loopback-in-peer-connection',
];

/// Opens `html` (with `scripts`: URL path -> JavaScript source) in a fresh
/// Chromium, or `url` when given (a page streamd serves itself). `webrtc` grants camera/microphone permission, as if the user
/// had once allowed them on the player's site (the page never uses them):
/// without it Chromium hides its host candidates behind mDNS names, and in
/// a loopback-only network namespace, where no mDNS responder can run, it
/// gathers nothing and ICE never starts. `init` runs in the page before any
/// of its scripts. `fakeMedia` gives getUserMedia Chromium's test camera
/// and microphone. Returns { page, logs, version, close }.
export async function openPage({ html, url, scripts = {}, webrtc = false, fakeMedia = false, init }) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'streamd-chromium-'));
  let context;
  let server;
  const close = async () => {
    await context?.close().catch(() => {});
    server?.close();
    rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    // launchPersistentContext is how Playwright takes an explicit profile;
    // headless:false plus --headless=new so the flag set is exactly ours.
    // CHROMIUM_TRUST_SPKI: the base64 SHA-256 of a test certificate's
    // public key, trusted for HTTPS and WSS as if a CA had signed it (the
    // tests make their own certificates).
    const trust = process.env.CHROMIUM_TRUST_SPKI;
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: false,
      permissions: webrtc ? ['camera', 'microphone'] : [],
      // fakeMedia: Chromium's test camera and tone instead of devices, and
      // no permission prompt (a browser WHIP publisher).
      args: [
        ...FLAGS,
        ...(trust ? [`--ignore-certificate-errors-spki-list=${trust}`] : []),
        ...(fakeMedia ? ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] : []),
      ],
    });
    const page = context.pages()[0] || (await context.newPage());
    const logs = [];
    page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`.slice(0, 500)));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`.slice(0, 500)));
    if (init) await page.addInitScript(init);
    if (url) {
      await page.goto(url);
      return { page, logs, version: context.browser()?.version() ?? null, close };
    }
    server = http.createServer((req, res) => {
      const js = scripts[req.url];
      if (js !== undefined) {
        res.writeHead(200, { 'content-type': 'text/javascript' });
        res.end(js);
      } else {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end(html);
      }
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    const version = context.browser()?.version() ?? null;
    return { page, logs, version, close };
  } catch (e) {
    await close();
    throw e;
  }
}
