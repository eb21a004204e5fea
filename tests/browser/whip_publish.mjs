// A browser WHIP publisher: headless Chromium's fake camera and microphone
// published with RTCPeerConnection and fetch() to streamd's WHIP endpoint
// (RFC 9725) from a page of another origin (so CORS is exercised), then
// played back over LL-HLS by hls.js in a second page. Prints one JSON line:
// the WHIP exchange, the publisher's outbound stats, the LL-HLS master
// playlist, how far hls.js played, and the DELETE that ends the session.
//
// usage: node whip_publish.mjs BASE_URL SECONDS
//   BASE_URL: http://HOST:PORT/APP/STREAM (WHIP at BASE_URL/whip,
//   LL-HLS at BASE_URL/llhls.m3u8). SECONDS: how long hls.js plays.
//   WHIP_VIDEO_CODEC=AV1 (or H265): offer only that video codec
//   (setCodecPreferences), as a publisher that prefers it would.
//   WHIP_SIMULCAST=1: publish 1280x720 as three simulcast layers (rids h,
//   m, l: full, half and quarter size), and report `simulcast`: each
//   layer's outbound stats, the renditions OME signalling lists, and a
//   WHEP play pinned to each of them.
//   WHIP_TRANSPORT=tcp: publish to BASE_URL/whip?transport=tcp (ICE-TCP
//   candidates only in the answer); `whip.pair` is the selected candidate
//   pair either way.
//   WHIP_RECORDING_TOKEN=JWT: after the DELETE, wait for the stream's
//   recording to be ready (the REST API, with this API token), then decode
//   every frame of its MP4 with ffprobe: `recording`.
//   WHIP_OVENPLAYER=SECONDS: also play the stream over WebRTC with
//   OvenPlayer (ovenplayer.mjs, run as it is) for that long, and report
//   `ovenplayer`: whether it played, its frames, size, audio, quality
//   levels and rendition changes.
// Exit code 0 whether or not it worked (the caller judges `playing` and
// `errors`); nonzero only if this script fails. netns.sh runs streamd and
// this script in a loopback-only network namespace (RTMP_URL=none).

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { openPage } from './chromium.mjs';
import { playWhep, rising } from './whep.mjs';

const require = createRequire(import.meta.url);
const hlsSource = readFileSync(require.resolve('hls.js/dist/hls.min.js'));
const watchdogSource = readFileSync(new URL('../../web/src/hls-watchdog.js', import.meta.url));
const [base, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 8);
const videoCodec = process.env.WHIP_VIDEO_CODEC || '';
const simulcast = process.env.WHIP_SIMULCAST === '1';
const ovenplayerSeconds = Number(process.env.WHIP_OVENPLAYER || 0);
const transport = process.env.WHIP_TRANSPORT ? `?transport=${process.env.WHIP_TRANSPORT}` : '';
if (!base) {
  console.error('usage: node whip_publish.mjs BASE_URL SECONDS');
  process.exit(2);
}
const report = { errors: [], playing: false };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const publisher = await openPage({
  html: '<!doctype html><html><body>WHIP publisher</body></html>',
  webrtc: true,
  fakeMedia: true,
});
let player;
try {
  report.chromium = publisher.version;
  report.whip = await publisher.page.evaluate(async ({ url, videoCodec, simulcast, transport }) => {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: simulcast ? { width: 1280, height: 720, frameRate: 30 } : { width: 640, height: 360, frameRate: 30 },
      audio: true,
    });
    const pc = new RTCPeerConnection();
    window.__pc = pc;
    for (const track of stream.getTracks()) {
      const init = { direction: 'sendonly' };
      if (track.kind === 'video' && simulcast) {
        init.sendEncodings = [
          { rid: 'h' },
          { rid: 'm', scaleResolutionDownBy: 2 },
          { rid: 'l', scaleResolutionDownBy: 4 },
        ];
      }
      const t = pc.addTransceiver(track, init);
      if (track.kind === 'video' && videoCodec) {
        const caps = RTCRtpSender.getCapabilities('video') || RTCRtpReceiver.getCapabilities('video');
        const wanted = caps.codecs.filter((c) => c.mimeType.toLowerCase() === `video/${videoCodec.toLowerCase()}`);
        if (wanted.length === 0) return { status: 0, error: `this Chromium cannot send ${videoCodec}` };
        t.setCodecPreferences(wanted);
      }
    }
    await pc.setLocalDescription(await pc.createOffer());
    // Candidates gathered before the POST (no trickle: the server takes
    // none later); a short wait, as OBS does.
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 2000);
    });
    const t0 = performance.now();
    const r = await fetch(`${url}/whip${transport}`, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const answer = await r.text();
    const out = { status: r.status, location: r.headers.get('location'), etag: r.headers.get('etag') };
    if (r.status !== 201) return { ...out, answer };
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await new Promise((resolve) => {
      if (pc.connectionState === 'connected') return resolve();
      pc.addEventListener('connectionstatechange', () => ['connected', 'failed'].includes(pc.connectionState) && resolve());
      setTimeout(resolve, 10000);
    });
    out.connectionState = pc.connectionState;
    out.connectedMs = Math.round(performance.now() - t0);
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
      const pair = stats.get(s.selectedCandidatePairId);
      const l = stats.get(pair.localCandidateId) || {};
      const rm = stats.get(pair.remoteCandidateId) || {};
      out.pair = {
        local: `${l.address}:${l.port}/${l.protocol} ${l.candidateType}`,
        remote: `${rm.address}:${rm.port}/${rm.protocol} ${rm.candidateType}`,
      };
    });
    return out;
  }, { url: base, videoCodec, simulcast, transport });
  if (report.whip.status !== 201 || report.whip.connectionState !== 'connected') {
    report.errors.push(`WHIP publish failed: ${JSON.stringify(report.whip).slice(0, 500)}`);
  } else {
    // LL-HLS from the WHIP stream (through the ladder, with its AAC).
    const master = `${base}/llhls.m3u8`;
    for (let i = 0; i < 60; i++) {
      const r = await fetch(master).catch(() => null);
      if (r?.status === 200) {
        report.master = await r.text();
        break;
      }
      await sleep(250);
    }
    if (!report.master) report.errors.push('no LL-HLS master playlist within 15 s');
    if (simulcast) {
      report.simulcast = await simulcastChecks();
      // Every layer has sent for a while now: each has whole segments,
      // which is when the master lists it.
      const r = await fetch(master).catch(() => null);
      if (r?.status === 200) report.master = await r.text();
    }
    if (ovenplayerSeconds > 0) report.ovenplayer = await ovenplayer(ovenplayerSeconds);
    player = await openPage({
      html: '<!doctype html><html><body><video id="v" muted playsinline></video><script src="/hls.min.js"></script><script src="/hls-watchdog.js"></script></body></html>',
      scripts: { '/hls.min.js': hlsSource, '/hls-watchdog.js': watchdogSource },
    });
    report.hls = await player.page.evaluate(async ({ url, seconds }) => {
      const video = document.getElementById('v');
      const hls = new Hls({ lowLatencyMode: true });
      const errors = [];
      hls.on(Hls.Events.ERROR, (_, d) => d.fatal && errors.push(`${d.type}: ${d.details}`));
      // The last parts and segments each loader buffered, to say which
      // track stopped when one does.
      const trail = [];
      hls.on(Hls.Events.FRAG_BUFFERED, (_, d) => {
        const part = d.part ? `.${d.part.index}` : '';
        trail.push(`${(performance.now() / 1000).toFixed(2)} ${d.frag.type} ${d.frag.sn}${part}`);
        if (trail.length > 24) trail.shift();
      });
      // The console's watchdog for hls.js's stuck loaders, as the console's
      // player runs it (web/src/hls-watchdog.js); its interventions are
      // reported.
      const watchdog = StreamdHlsWatchdog.attach(hls);
      hls.loadSource(url);
      hls.attachMedia(video);
      await video.play().catch((e) => errors.push(`play: ${e.message}`));
      const start = performance.now();
      let first = null;
      while (performance.now() - start < seconds * 1000) {
        await new Promise((r) => setTimeout(r, 250));
        if (first === null && video.currentTime > 0) first = video.currentTime;
      }
      const q = video.getVideoPlaybackQuality();
      const ranges = (b) => Array.from({ length: b.length }, (_, i) => [b.start(i).toFixed(2), b.end(i).toFixed(2)]);
      watchdog.stop();
      // Each loader's own buffer (hls.js 1.7 internals, read-only).
      const own = (b) => {
        try {
          return b ? ranges(b.buffered) : null;
        } catch (e) {
          return `${e}`;
        }
      };
      const main = hls.streamController;
      return {
        currentTime: video.currentTime,
        latency: hls.latency,
        levelDetails: hls.levels[hls.currentLevel]?.details?.fragments?.slice(-2).map((f) => [f.sn, f.start.toFixed(2), f.duration.toFixed(2)]),
        buffered: ranges(video.buffered),
        videoBuffer: own(main && (main.videoBuffer || main.mediaBuffer)),
        audioBuffer: own(hls.audioStreamController && hls.audioStreamController.mediaBuffer),
        loaderStates: [main?.state, hls.audioStreamController?.state],
        unstuck: watchdog.interventions,
        trail,
        advanced: first === null ? 0 : video.currentTime - first,
        framesDecoded: q.totalVideoFrames,
        width: video.videoWidth,
        audioTracks: hls.audioTracks.length,
        levels: hls.levels.map((l) => `${l.width}x${l.height} ${l.videoCodec ?? ''} ${l.audioCodec ?? ''}`),
        errors,
      };
    }, { url: master, seconds });
    report.errors.push(...report.hls.errors);
    // The media playlists' ends, as the player last could see them.
    report.playlistTails = {};
    for (const uri of (report.master ?? '').split('\n').flatMap((l) => l.match(/[a-z0-9]+_[0-9a-f]+\.m3u8/g) ?? [])) {
      const r = await fetch(`${base}/${uri}`).catch(() => null);
      const text = r ? await r.text() : '';
      report.playlistTails[uri] = text.split('\n').slice(-8);
    }
    // Started: hls.js decoded the WHIP stream's LL-HLS and advanced. Kept
    // apart from a sustained run: hls.js without the watchdog stopped
    // appending after 0.1-1.5 s in some runs (about one in five once, one
    // in CI's last two) while the playlists went on; `sustained` says which
    // this run was, and `unstuck`, `trail` and each loader's buffer say
    // where it stood.
    report.playing = report.hls.advanced > 0.5 && report.hls.framesDecoded > 0;
    report.sustained = report.hls.advanced > seconds / 2;
    // An ICE restart (RFC 9725 §4.3.2), as a browser WHIP client does one:
    // restartIce(), the new credentials and candidates by PATCH with
    // If-Match: *, and the server's new ones from its fragment into the
    // answer. Chromium pairs anew: the selected pair changes only if the
    // server takes checks with the new credentials.
    report.restart = await publisher.page.evaluate(async ({ url, location }) => {
      const pc = window.__pc;
      const selected = async () => {
        const stats = await pc.getStats();
        for (const s of stats.values()) if (s.type === 'transport') return s.selectedCandidatePairId;
        return null;
      };
      const sent = async () => {
        let n = 0;
        (await pc.getStats()).forEach((s) => s.type === 'outbound-rtp' && s.kind === 'video' && (n = s.packetsSent));
        return n;
      };
      const before = await selected();
      pc.restartIce();
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
        setTimeout(resolve, 2000);
      });
      const local = pc.localDescription.sdp;
      const attr = (sdp, name) => sdp.match(new RegExp(`a=${name}:(.*)`))[1].trim();
      const lines = (sdp) => sdp.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'));
      const fragment = `a=ice-ufrag:${attr(local, 'ice-ufrag')}\r\na=ice-pwd:${attr(local, 'ice-pwd')}\r\n`
        + lines(local).map((l) => `${l}\r\n`).join('');
      const r = await fetch(new URL(url).origin + location, {
        method: 'PATCH',
        headers: { 'content-type': 'application/trickle-ice-sdpfrag', 'if-match': '*' },
        body: fragment,
      });
      const body = await r.text();
      const out = { status: r.status, etag: r.headers.get('etag'), before };
      if (r.status !== 200) return { ...out, body };
      let answer = '';
      let placed = false;
      for (const l of pc.currentRemoteDescription.sdp.split(/\r?\n/)) {
        if (!l || l.startsWith('a=candidate:') || l === 'a=end-of-candidates') continue;
        if (l.startsWith('a=ice-ufrag:')) answer += `a=ice-ufrag:${attr(body, 'ice-ufrag')}\r\n`;
        else if (l.startsWith('a=ice-pwd:')) answer += `a=ice-pwd:${attr(body, 'ice-pwd')}\r\n`;
        else answer += `${l}\r\n`;
        if (!placed && l.startsWith('a=mid:')) {
          answer += lines(body).map((c) => `${c}\r\n`).join('');
          placed = true;
        }
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      const t0 = performance.now();
      // The new pair is selected, then its checks succeed: a pair can be
      // selected while its state still reads in-progress.
      let pair;
      while (performance.now() - t0 < 10000) {
        out.after = await selected();
        pair = out.after ? (await pc.getStats()).get(out.after) : undefined;
        if (out.after && out.after !== before && pair?.state === 'succeeded') break;
        await new Promise((res) => setTimeout(res, 200));
      }
      out.pairState = pair?.state;
      out.responsesReceived = pair?.responsesReceived;
      out.restartMs = Math.round(performance.now() - t0);
      // Media goes on over the new pair.
      const sentBefore = await sent();
      await new Promise((res) => setTimeout(res, 1500));
      out.packetsAfter = (await sent()) - sentBefore;
      out.connectionState = pc.connectionState;
      return out;
    }, { url: base, location: report.whip.location });
    report.outbound = await publisher.page.evaluate(async () => {
      const stats = await window.__pc.getStats();
      const out = [];
      const codecs = {};
      stats.forEach((s) => s.type === 'codec' && (codecs[s.id] = s.mimeType));
      stats.forEach((s) => {
        if (s.type === 'outbound-rtp') {
          out.push({ kind: s.kind, codec: codecs[s.codecId], packetsSent: s.packetsSent, framesEncoded: s.framesEncoded });
        }
      });
      return out;
    });
    // The session's resource ends it.
    report.deleteStatus = await publisher.page.evaluate(async ({ url, location }) => {
      const origin = new URL(url).origin;
      const r = await fetch(origin + location, { method: 'DELETE' });
      return r.status;
    }, { url: base, location: report.whip.location });
    if (process.env.WHIP_RECORDING_TOKEN) report.recording = await recording(process.env.WHIP_RECORDING_TOKEN);
  }
} catch (e) {
  report.errors.push(`script: ${e.message}`);
} finally {
  report.pageLogs = [...publisher.logs, ...(player?.logs ?? [])].slice(0, 50);
  await player?.close();
  await publisher.close();
}
console.log(JSON.stringify(report));

// The stream's recording once the publisher has left: ready (as the REST
// API says), and every frame of its MP4 decoded by ffprobe (counted per
// stream, with any decoder error). ffprobe rather than `ffmpeg -f null`:
// the null muxer's frame-rate time base makes a browser's variable frame
// timing look like duplicate timestamps that the file does not have.
async function recording(token) {
  const { origin, pathname } = new URL(base);
  const stream = pathname.replace(/^\//, '');
  const out = {};
  for (let i = 0; i < 120 && out.status !== 'ready'; i++) {
    await sleep(250);
    const r = await fetch(`${origin}/api/recordings?stream=${stream}`, { headers: { authorization: `Bearer ${token}` } }).catch(() => null);
    const list = r?.status === 200 ? await r.json() : [];
    Object.assign(out, { id: list[0]?.id, status: list[0]?.status });
  }
  if (out.status !== 'ready') return out;
  const mp4 = `${origin}/vod/${out.id}/recording.mp4`;
  const probe = await new Promise((resolve) => {
    const args = ['-v', 'error', '-count_frames', '-show_entries', 'stream=codec_name,width,nb_read_frames', '-of', 'csv=p=0', mp4];
    execFile('ffprobe', args, { maxBuffer: 16 << 20 }, (err, stdout, stderr) => resolve({ ok: !err, stdout, stderr }));
  });
  out.streams = probe.stdout.trim().split('\n');
  out.decoded = probe.ok;
  out.decodeErrors = probe.stderr.trim().slice(0, 2000);
  return out;
}

// OvenPlayer over WebRTC (OME signalling on the stream's ws:// URL), by
// ovenplayer.mjs in its own Chromium: the summary of its report.
async function ovenplayer(seconds) {
  const script = new URL('./ovenplayer.mjs', import.meta.url).pathname;
  const ws = base.replace(/^http/, 'ws');
  const stdout = await new Promise((resolve) => {
    execFile(process.execPath, [script, ws, String(seconds)], { maxBuffer: 16 << 20 }, (err, out, errText) => {
      resolve(err ? `${out}\n${JSON.stringify({ errors: [`ovenplayer.mjs: ${err.message} ${errText}`.slice(0, 500)] })}` : out);
    });
  });
  let r;
  try {
    r = JSON.parse(stdout.trim().split('\n').pop());
  } catch (e) {
    return { playing: false, errors: [`no report from ovenplayer.mjs: ${stdout.slice(-300)}`] };
  }
  return {
    playing: r.playing,
    errors: r.errors,
    framesDecoded: r.framesDecoded?.[r.framesDecoded.length - 1],
    width: r.frameWidth,
    height: r.frameHeight,
    videoCodec: r.videoCodec,
    audioCodec: r.audioCodec,
    audioPacketsReceived: r.audioPacketsReceived,
    qualityLevels: r.qualityLevels,
    qualityChanges: (r.events ?? []).filter((e) => e.event === 'qualityLevelChanged'),
    candidatePair: r.candidatePair,
  };
}

// The simulcast checks: every layer sending for 4 s (Chromium starts the
// upper layers as its bandwidth estimate grows), then what OME signalling
// lists (names, sizes, measured bitrates), then a WHEP play pinned to each
// rendition it lists.
async function simulcastChecks() {
  const out = {};
  out.layers = await publisher.page.evaluate(async () => {
    const since = {};
    let layers = [];
    const t0 = performance.now();
    while (performance.now() - t0 < 30000) {
      layers = [];
      (await window.__pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video') {
          layers.push({ rid: s.rid, width: s.frameWidth, height: s.frameHeight, framesEncoded: s.framesEncoded, active: s.active });
          if (s.framesEncoded > 0 && since[s.rid] === undefined) since[s.rid] = performance.now();
        }
      });
      const started = Object.values(since);
      if (started.length === 3 && performance.now() - Math.max(...started) > 4000) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    return layers;
  });
  const ws = base.replace(/^http/, 'ws');
  out.playlist = await publisher.page.evaluate(async (ws) => {
    const socket = new WebSocket(ws);
    const pc = new RTCPeerConnection();
    const result = await new Promise((resolve) => {
      setTimeout(() => resolve({ error: 'no playlist within 10 s' }), 10000);
      socket.onopen = () => socket.send(JSON.stringify({ command: 'request_offer' }));
      socket.onmessage = async (e) => {
        const m = JSON.parse(e.data);
        if (m.command === 'offer') {
          await pc.setRemoteDescription(m.sdp);
          await pc.setLocalDescription(await pc.createAnswer());
          socket.send(JSON.stringify({ command: 'answer', id: m.id, peer_id: 0, sdp: pc.localDescription }));
        } else if (m.command === 'notification' && m.type === 'playlist') {
          resolve(m.message);
        } else if (m.error || m.code) {
          resolve({ error: e.data });
        }
      };
    });
    socket.close();
    pc.close();
    return result;
  }, ws);
  out.whep = {};
  for (const r of out.playlist.renditions ?? []) {
    const viewer = await openPage({ html: '<!doctype html><html><body></body></html>', webrtc: true });
    try {
      const w = await playWhep(viewer.page, { base, seconds: 4, rendition: r.name });
      out.whep[r.name] = { status: w.status, width: w.width, height: w.height, codec: w.videoCodec, playing: rising(w.framesDecoded), errors: w.errors };
    } finally {
      await viewer.close();
    }
  }
  return out;
}
