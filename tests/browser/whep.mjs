// The in-page WHEP player that whep_play.mjs and whip_publish.mjs share:
// receive-only video and audio offered to streamd's WHEP endpoint with
// fetch(), played for a while, then ended with DELETE.

/// Plays BASE's WHEP (`BASE/whep`, pinned to RENDITION when given) in
/// `page` for SECONDS. Returns the exchange and the inbound stats over the
/// run: decoded frames (sampled every 500 ms), the picture's size, the
/// codecs, and the DELETE's status.
export async function playWhep(page, { base, seconds, rendition = null }) {
  return page.evaluate(async ({ base, seconds, rendition }) => {
    const out = { framesDecoded: [], errors: [] };
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    document.body.append(video);
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
    const query = rendition ? `?rendition=${encodeURIComponent(rendition)}` : '';
    const r = await fetch(`${base}/whep${query}`, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const answer = await r.text();
    out.status = r.status;
    out.location = r.headers.get('location');
    if (r.status !== 201) {
      out.errors.push(`WHEP POST ${r.status}: ${answer.slice(0, 300)}`);
      pc.close();
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
          out.height = s.frameHeight;
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
    video.remove();
    return out;
  }, { base, seconds, rendition });
}

/// Decoded frames rose over the second half of the run.
export function rising(framesDecoded) {
  const last = framesDecoded[framesDecoded.length - 1] ?? 0;
  return last > 0 && last > (framesDecoded[Math.floor(framesDecoded.length / 2)] ?? 0);
}
