// The test pages and tools/test-stream.sh as a user runs them: the script
// creates a stream through the API (STREAMD_TOKEN) and publishes to it,
// then each page it prints is opened in headless Chromium and watched.
// Prints one JSON line: what the script printed, and per page whether its
// video advanced, by how much, and at what size.
//
// usage: STREAMD_TOKEN=<api jwt> node pages.mjs BASE_URL SECONDS
//   BASE_URL e.g. http://127.0.0.1:3333 (RTMP on port 1935 of its host)

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openPage } from './chromium.mjs';

const [base, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 6);
if (!base || !process.env.STREAMD_TOKEN) {
  console.error('usage: STREAMD_TOKEN=... node pages.mjs BASE_URL SECONDS');
  process.exit(2);
}
const repo = fileURLToPath(new URL('../..', import.meta.url));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const report = { lines: [], pages: {}, errors: [] };

const script = spawn('bash', [repo + 'tools/test-stream.sh'], {
  cwd: repo,
  env: {
    ...process.env,
    STREAMD_HTTP: base,
    STREAMD_RTMP: `rtmp://${new URL(base).hostname}:1935`,
    SIZE: '640x360',
    DURATION: String(4 * seconds + 30),
  },
  stdio: ['ignore', 'pipe', 'pipe'],
});
let stderr = '';
script.stderr.on('data', (d) => (stderr += d));
let buffered = '';
script.stdout.on('data', (d) => {
  buffered += d;
  const lines = buffered.split('\n');
  buffered = lines.pop();
  report.lines.push(...lines);
});

// Plays `url` (a page streamd serves) and measures its <video> over `seconds`.
async function watch(url) {
  const { page, logs, close } = await openPage({ url, webrtc: true });
  try {
    const r = await page.evaluate(async (seconds) => {
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const t0 = performance.now();
      let video = null;
      while (performance.now() - t0 < 15000) {
        video = document.querySelector('video');
        if (video && video.currentTime > 0) break;
        await sleep(100);
      }
      if (!video || video.currentTime === 0) return { started: false, log: document.getElementById('log')?.textContent };
      const start = video.currentTime;
      await sleep(seconds * 1000);
      return {
        started: true,
        advanced: video.currentTime - start,
        width: video.videoWidth,
        height: video.videoHeight,
        frames: video.getVideoPlaybackQuality().totalVideoFrames,
        log: document.getElementById('log')?.textContent,
      };
    }, seconds);
    r.console = logs.slice(-10);
    return r;
  } finally {
    await close();
  }
}

try {
  const t0 = Date.now();
  while (!report.lines.some((l) => l.startsWith('publishing to')) && Date.now() - t0 < 20000) await sleep(100);
  const url = (needle) => report.lines.map((l) => l.match(/(https?:\/\/\S+)/)?.[1]).find((u) => u && u.includes(needle));
  const hls = url('/llhls.m3u8');
  if (!hls) throw new Error(`test-stream.sh printed no LL-HLS URL: ${report.lines.join(' | ')} ${stderr}`);
  // The stream is live once its playlist answers.
  while (Date.now() - t0 < 30000) {
    const r = await fetch(hls).catch(() => null);
    if (r?.status === 200) break;
    await sleep(200);
  }
  for (const name of ['webrtc-test.html', 'direct-hls-test.html']) {
    const page = url(name);
    report.pages[name] = page ? { url: page, ...(await watch(page)) } : null;
  }
} catch (e) {
  report.errors.push(String(e));
} finally {
  script.kill('SIGTERM');
}
report.stderr = stderr.slice(-1000);
console.log(JSON.stringify(report));
