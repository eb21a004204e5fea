// Drives streamd's web console in headless Chromium to a stream's
// recordings: pastes an API token, opens the stream, waits for a `ready`
// recording in its list, presses Play and watches the console's OvenPlayer
// play it (HLS VOD). Prints one JSON line: the player's state and source,
// how far its video advanced, the recording's row and its MP4 link.
//
// usage: STREAMD_TOKEN=<api jwt> node console_vod.mjs BASE_URL STREAM_ID

import { openPage } from './chromium.mjs';

const [base, id] = process.argv.slice(2);
const token = process.env.STREAMD_TOKEN;
if (!base || !id || !token) {
  console.error('usage: STREAMD_TOKEN=... node console_vod.mjs BASE_URL STREAM_ID');
  process.exit(2);
}

const { page, logs, close } = await openPage({ url: base + '/' });
try {
  await page.fill('#token', token);
  await page.click('#token-form button');
  await page.waitForSelector(`tr[data-id="${id}"] button.open`, { timeout: 10000 });
  await page.click(`tr[data-id="${id}"] button.open`);
  const row = '#recording-rows tr[data-status="ready"]';
  await page.waitForSelector(row, { timeout: 10000 });
  const cells = await page.$$eval(`${row} td`, (tds) => tds.map((t) => t.textContent));
  const mp4 = await page.getAttribute(`${row} a`, 'href');
  await page.click(`${row} button.play`);
  const result = await page.evaluate(async () => {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const status = document.getElementById('player-status');
    let start = null;
    const end = performance.now() + 15000;
    let advanced = 0;
    while (performance.now() < end && advanced < 3) {
      await sleep(250);
      const v = document.querySelector('#player video');
      if (v && start === null && v.currentTime > 0) start = v.currentTime;
      if (v && start !== null) advanced = v.currentTime - start;
    }
    return {
      state: status.dataset.state,
      source: status.dataset.source,
      lastError: status.dataset.lastError || null,
      advanced,
      message: document.getElementById('message').textContent,
    };
  });
  result.cells = cells;
  result.mp4 = mp4;
  result.console = logs.slice(-15);
  console.log(JSON.stringify(result));
} finally {
  await close();
}
