// Plays a recording's VOD (master.m3u8) with hls.js in headless Chromium,
// then seeks into its middle, and prints one JSON line: the duration hls.js
// sees, the playlist type, and the clock code (the publisher's wall clock
// drawn into every picture, see clock.js) at the start and where the seek
// landed, so the caller can check the picture shown is the one recorded
// that far in. Nothing the server stamps is used.
//
// usage: node vod.mjs URL

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { openPage } from './chromium.mjs';

const require = createRequire(import.meta.url);
const hlsSource = readFileSync(require.resolve('hls.js/dist/hls.min.js'));
const clockSource = readFileSync(new URL('./clock.js', import.meta.url));
const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: node vod.mjs URL');
  process.exit(2);
}

const { page, close } = await openPage({
  html: '<!doctype html><html><body><video id="v" muted playsinline></video><script src="/hls.min.js"></script><script src="/clock.js"></script></body></html>',
  scripts: { '/hls.min.js': hlsSource, '/clock.js': clockSource },
});
try {
  const result = await page.evaluate(async ({ url }) => {
    const video = document.getElementById('v');
    const hls = new Hls();
    const errors = [];
    let type = null;
    hls.on(Hls.Events.ERROR, (_e, d) => {
      if (d.fatal) errors.push(`${d.type}/${d.details}`);
    });
    hls.on(Hls.Events.LEVEL_LOADED, (_e, d) => {
      type = d.details.type;
    });
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    // The clock code of the picture shown now (null: unreadable).
    const code = () => {
      const w = video.videoWidth;
      const strip = Math.floor(video.videoHeight / 8);
      if (!w || strip < 2) return null;
      canvas.width = w;
      canvas.height = strip;
      ctx.drawImage(video, 0, 0, w, strip, 0, 0, w, strip);
      return GlassClock.read(ctx.getImageData(0, 0, w, strip).data, w, strip);
    };
    // The next presented frame's time in the media and its code.
    const nextFrame = () =>
      new Promise((resolve) => video.requestVideoFrameCallback((_n, meta) => resolve({ mediaTime: meta.mediaTime, code: code() })));
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const until = async (cond, ms) => {
      const end = performance.now() + ms;
      while (!cond() && performance.now() < end && errors.length === 0) await sleep(50);
      return cond();
    };
    hls.loadSource(url);
    hls.attachMedia(video);
    video.play().catch(() => {});
    if (!(await until(() => video.currentTime > 0.5, 20000))) {
      return { errors, stage: 'start', currentTime: video.currentTime };
    }
    // The first picture: hls.js starts a VOD at 0.
    video.pause();
    video.currentTime = 0;
    await new Promise((r) => video.addEventListener('seeked', r, { once: true }));
    video.play().catch(() => {});
    const first = await nextFrame();
    const duration = video.duration;
    const target = duration / 2;
    video.currentTime = target;
    await new Promise((r) => video.addEventListener('seeked', r, { once: true }));
    const landed = await nextFrame();
    const seekedAt = video.currentTime;
    // Plays on from there.
    const advanced = await until(() => video.currentTime > seekedAt + 2, 10000);
    return { errors, type, duration, target, first, landed, advancedAfterSeek: advanced, currentTime: video.currentTime };
  }, { url });
  console.log(JSON.stringify(result));
} finally {
  await close();
}
