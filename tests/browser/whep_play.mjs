// A browser WHEP player: headless Chromium offers receive-only video and
// audio to streamd's WHEP endpoint with fetch() from a page of another
// origin, plays what comes, and ends the session with DELETE. Prints one
// JSON line: the WHEP exchange, the inbound stats over the run (decoded
// frames rising, audio received, codecs) and the DELETE's status.
//
// usage: node whep_play.mjs WS_OR_HTTP_URL SECONDS
//   the stream's URL (ws://HOST:PORT/APP/STREAM as netns.sh passes it, or
//   http://…); WHEP is at http://HOST:PORT/APP/STREAM/whep.
// Exit code 0 whether or not it played (the caller judges `playing`).

import { openPage } from './chromium.mjs';
import { playWhep, rising } from './whep.mjs';

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 8);
if (!url) {
  console.error('usage: node whep_play.mjs URL SECONDS');
  process.exit(2);
}
const base = url.replace(/^ws(s?):/, 'http$1:').replace(/\?.*$/, '').replace(/\/+$/, '');
const report = { errors: [], playing: false };
const { page, logs, version, close } = await openPage({
  html: '<!doctype html><html><body></body></html>',
  webrtc: true,
});
try {
  report.chromium = version;
  Object.assign(report, await playWhep(page, { base, seconds }));
  report.playing = rising(report.framesDecoded);
} catch (e) {
  report.errors.push(`script: ${e.message}`);
} finally {
  report.pageLogs = logs.slice(0, 50);
  await close();
}
console.log(JSON.stringify(report));
