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

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 8);
if (!url) {
  console.error('usage: node whep_play.mjs URL SECONDS');
  process.exit(2);
}
const base = url.replace(/^ws(s?):/, 'http$1:').replace(/\?.*$/, '').replace(/\/+$/, '');
const report = { errors: [], playing: false };
const { page, logs, version, close } = await openPage({
  html: '<!doctype html><html><body><video id="v" muted autoplay playsinline></video></body></html>',
  webrtc: true,
});
try {
  report.chromium = version;
  Object.assign(report, await page.evaluate(async ({ base, seconds }) => {
    const out = { framesDecoded: [], errors: [] };
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const video = document.getElementById('v');
    const stream = new MediaStream();
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      video.srcObject = stream;
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 2000);
    });
    const t0 = performance.now();
    const r = await fetch(`${base}/whep`, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const answer = await r.text();
    out.status = r.status;
    out.location = r.headers.get('location');
    if (r.status !== 201) {
      out.errors.push(`WHEP POST ${r.status}: ${answer.slice(0, 300)}`);
      return out;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await video.play().catch(() => {});
    const end = performance.now() + seconds * 1000;
    while (performance.now() < end) {
      await new Promise((res) => setTimeout(res, 500));
      const stats = await pc.getStats();
      const codecs = {};
      stats.forEach((s) => s.type === 'codec' && (codecs[s.id] = s.mimeType));
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          out.framesDecoded.push(s.framesDecoded ?? 0);
          out.videoCodec = codecs[s.codecId];
          out.width = s.frameWidth;
          if (out.firstFrameMs === undefined && s.framesDecoded > 0) out.firstFrameMs = Math.round(performance.now() - t0);
        } else if (s.kind === 'audio') {
          out.audioPacketsReceived = s.packetsReceived;
          out.audioCodec = codecs[s.codecId];
        }
      });
    }
    out.connectionState = pc.connectionState;
    const d = await fetch(new URL(base).origin + out.location, { method: 'DELETE' });
    out.deleteStatus = d.status;
    pc.close();
    return out;
  }, { base, seconds }));
  const f = report.framesDecoded;
  const last = f[f.length - 1] ?? 0;
  report.playing = last > 0 && last > (f[Math.floor(f.length / 2)] ?? 0);
} catch (e) {
  report.errors.push(`script: ${e.message}`);
} finally {
  report.pageLogs = logs.slice(0, 50);
  await close();
}
console.log(JSON.stringify(report));
