// Plays an LL-HLS URL with hls.js in headless Chromium and prints, as one
// JSON line, what a viewer would see: how far playback advanced, the
// glass-to-glass latency (Date.now() - hls.playingDate, where playingDate
// comes from EXT-X-PROGRAM-DATE-TIME stamped at ingest), stalls and errors.
//
// usage: node hlsjs.mjs URL SECONDS [switch]
//
// With `switch`, the level is forced to the next one every 2 s (hls.nextLevel:
// at the next fragment boundary, as an ABR controller would), and the levels
// actually switched to are reported.

import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import http from 'node:http';

const require = createRequire(import.meta.url);
const hlsSource = readFileSync(require.resolve('hls.js/dist/hls.min.js'));
let pageServer;
const [url, secondsArg, mode] = process.argv.slice(2);
const seconds = Number(secondsArg || 10);
if (!url) {
  console.error('usage: node hlsjs.mjs URL SECONDS');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
try {
  const page = await browser.newPage();
  const logs = [];
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  // The player page is served from its own loopback HTTP server, as a
  // site would serve it: another origin than streamd (so CORS is
  // exercised), and a real loopback address (Chromium's Local Network
  // Access lets a loopback page reach loopback servers).
  const server = http.createServer((req, res) => {
    if (req.url === '/hls.min.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(hlsSource);
    } else {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><html><body><video id="v" muted playsinline></video><script src="/hls.min.js"></script></body></html>');
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  pageServer = server;
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  const result = await page.evaluate(
    async ({ url, seconds, mode }) => {
      const video = document.getElementById('v');
      const hls = new Hls({ lowLatencyMode: true });
      const errors = [];
      let stalls = 0;
      hls.on(Hls.Events.ERROR, (_e, d) => {
        if (d.fatal) errors.push(`${d.type}/${d.details}`);
      });
      video.addEventListener('waiting', () => stalls++);
      const switched = [];
      hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => switched.push(d.level));
      hls.loadSource(url);
      hls.attachMedia(video);
      await new Promise((resolve, reject) => {
        hls.on(Hls.Events.MANIFEST_PARSED, resolve);
        setTimeout(() => reject(new Error('manifest not parsed in 15 s')), 15000);
      });
      await video.play();
      // Wait for playback to start, then measure.
      const t0 = performance.now();
      while (video.currentTime === 0 && performance.now() - t0 < 15000) {
        await new Promise((r) => setTimeout(r, 100));
      }
      const start = video.currentTime;
      stalls = 0;
      const latencies = [];
      const end = performance.now() + seconds * 1000;
      let nextSwitch = performance.now() + 2000;
      switched.length = 0;
      while (performance.now() < end) {
        await new Promise((r) => setTimeout(r, 250));
        if (mode === 'switch' && performance.now() >= nextSwitch && hls.levels.length > 1) {
          const current = hls.currentLevel < 0 ? 0 : hls.currentLevel;
          hls.nextLevel = (current + 1) % hls.levels.length;
          nextSwitch = performance.now() + 2000;
        }
        const date = hls.playingDate;
        if (date && !video.paused) latencies.push((Date.now() - date.getTime()) / 1000);
      }
      const levels = hls.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate }));
      return {
        startedAt: start,
        advanced: video.currentTime - start,
        latencies,
        hlsLatency: hls.latency,
        targetLatency: hls.targetLatency,
        stalls,
        errors,
        levels,
        switched,
        audioTracks: hls.audioTracks.length,
        decodedFrames: video.getVideoPlaybackQuality().totalVideoFrames,
        droppedFrames: video.getVideoPlaybackQuality().droppedVideoFrames,
      };
    },
    { url, seconds, mode },
  );
  result.console = logs.slice(-20);
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  pageServer?.close();
}
