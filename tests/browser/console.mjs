// Drives streamd's web console in headless Chromium as a user would: pastes
// an API token, creates a stream through the form, publishes to the key
// the page shows (ffmpeg), and watches the console's OvenPlayer. Prints one
// JSON line: the stream, the player's state and source (WebRTC or LL-HLS),
// how far its video advanced, and errors.
//
// usage: STREAMD_TOKEN=<api jwt> node console.mjs BASE_URL SECONDS
//   BASE_URL e.g. http://127.0.0.1:3333 (streamd serves the console at /)

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { openPage } from './chromium.mjs';

const [base, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 10);
const token = process.env.STREAMD_TOKEN;
if (!base || !token) {
  console.error('usage: STREAMD_TOKEN=... node console.mjs BASE_URL SECONDS');
  process.exit(2);
}

const { page, logs, close } = await openPage({ url: base + '/', webrtc: true });
let ffmpeg;
try {
  await page.fill('#token', token);
  await page.click('#token-form button');
  await page.fill('#name', 'Console test');
  await page.fill('#description', 'made by console.mjs');
  await page.click('#create-form button');
  await page.waitForSelector('#details:not([hidden])', { timeout: 10000 });
  const id = await page.getAttribute('#details', 'data-id');
  const key = await page.textContent('#obs-key');
  const publishUrl = await page.textContent('#ffmpeg-url');
  // Publish to what the page shows (the host in it is the page's host).
  // With CLOCK_FILTER (tests/common/clock.rs), the picture carries the
  // glass-to-glass clock, which the page then reads (clock.js).
  const clock = process.env.CLOCK_FILTER;
  ffmpeg = spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-nostdin',
    '-re', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30',
    '-re', '-f', 'lavfi', '-i', `sine=frequency=${clock ? 1000 : 440}:sample_rate=44100`,
    ...(clock ? ['-filter_complex', clock, '-map', '[v]', '-map', '[a]'] : []),
    '-t', String(seconds + 30),
    '-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p', '-g', '30', '-bf', '0', '-b:v', '500k',
    '-c:a', 'aac', '-b:a', '64k', '-ac', '2', '-f', 'flv', publishUrl,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let ffmpegErr = '';
  ffmpeg.stderr.on('data', (d) => { ffmpegErr += d; });
  // The player started before the stream existed: reopen it once live.
  const deadline = Date.now() + 20000;
  let live = false;
  while (!live && Date.now() < deadline) {
    await page.waitForTimeout(500);
    await page.click('#refresh');
    await page.waitForTimeout(200);
    live = (await page.textContent(`tr[data-id="${id}"] td:nth-child(3)`)) === 'live';
  }
  await page.click(`tr[data-id="${id}"] button.open`);
  await page.addScriptTag({ content: readFileSync(new URL('./clock.js', import.meta.url), 'utf8') });
  const result = await page.evaluate(async (seconds) => {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const status = document.getElementById('player-status');
    const states = [];
    let start = null;
    let clock = null;
    const end = performance.now() + seconds * 1000;
    while (performance.now() < end) {
      await sleep(250);
      const v = document.querySelector('#player video');
      const s = `${status.dataset.state}/${status.dataset.source}`;
      if (states[states.length - 1] !== s) states.push(s);
      if (v && start === null && v.currentTime > 0) {
        start = v.currentTime;
        clock = GlassClock.watch(v);
      }
    }
    clock?.stop();
    const v = document.querySelector('#player video');
    return {
      state: status.dataset.state,
      source: status.dataset.source,
      lastError: status.dataset.lastError || null,
      // Interventions of the console's hls.js watchdog (hls-watchdog.js);
      // absent until it watches an hls.js instance.
      unstuck: status.dataset.unstuck === undefined ? null : Number(status.dataset.unstuck),
      tried: (status.dataset.tried || '').split(',').filter(Boolean),
      states,
      advanced: v && start !== null ? v.currentTime - start : 0,
      width: v ? v.videoWidth : 0,
      clock: clock ? clock.summary() : null,
      message: document.getElementById('message').textContent,
      // The playback URLs the API gave the console.
      webrtcUrl: document.getElementById('webrtc-url').textContent,
      llhlsUrl: document.getElementById('llhls-url').textContent,
    };
  }, seconds);
  result.playing = result.state === 'playing' && result.advanced > 2;
  result.id = id;
  result.keyShown = key;
  result.live = live;
  result.ffmpeg = ffmpegErr.slice(-500);
  result.console = logs.slice(-15);
  console.log(JSON.stringify(result));
} finally {
  ffmpeg?.kill('SIGKILL');
  await close();
}
