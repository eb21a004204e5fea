// Plays an OME-style WebRTC stream (ws://HOST:3333/{app}/{stream}) with the
// real, unmodified OvenPlayer (npm `ovenplayer`) in headless Chromium and
// prints, as one JSON line, what a viewer would see: the decoded-frame
// series, the time from player creation to the first decoded frame, the
// audio received, OvenPlayer's events/errors/quality levels and the ICE
// candidate pair, and the glass-to-glass latency read from the picture
// (`clock`, see clock.js) from the first decoded frame on.
//
// usage: node ovenplayer.mjs WS_URL SECONDS
//
// SECONDS counts from OvenPlayer.create(). The exit code is 0 whether or not
// the stream played (the caller judges the JSON: `playing`, `framesDecoded`,
// `audioPacketsReceived`, `errors`); it is nonzero only if this script fails.
//
// The page is granted camera/microphone permission (see chromium.mjs):
// without it Chromium gathers no candidate in a loopback-only network
// namespace. netns.sh next to this file runs streamd, a publisher and this
// script in such a namespace.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { openPage } from './chromium.mjs';

const require = createRequire(import.meta.url);
const hlsSource = readFileSync(require.resolve('hls.js/dist/hls.min.js'));
const opSource = readFileSync(require.resolve('ovenplayer/dist/ovenplayer.js'));
const clockSource = readFileSync(new URL('./clock.js', import.meta.url));
const opVersion = JSON.parse(readFileSync(require.resolve('ovenplayer/package.json'))).version;

const [wsUrl, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 10);
if (!wsUrl || !(seconds > 0)) {
  console.error('usage: node ovenplayer.mjs WS_URL SECONDS');
  process.exit(2);
}

// Runs in the page before any script: records every RTCPeerConnection that
// OvenPlayer creates (and its state changes) and every signalling message on
// its WebSocket, without changing their behaviour.
function instrument() {
  // Times are ms since OvenPlayer.create() (which resets t0).
  const pcs = [];
  const pcEvents = [];
  const signalling = [];
  const probe = { pcs, pcEvents, signalling, t0: performance.now() };
  const now = () => Math.round(performance.now() - probe.t0);
  window.__probe = probe;
  const OrigPC = window.RTCPeerConnection;
  class RecordedPC extends OrigPC {
    constructor(...args) {
      super(...args);
      const n = pcs.length;
      pcs.push(this);
      pcEvents.push({ t: now(), pc: n, event: 'created', config: JSON.stringify(args[0] || {}) });
      for (const ev of ['iceconnectionstatechange', 'connectionstatechange', 'signalingstatechange']) {
        this.addEventListener(ev, () =>
          pcEvents.push({
            t: now(),
            pc: n,
            event: ev,
            ice: this.iceConnectionState,
            conn: this.connectionState,
            sig: this.signalingState,
          }),
        );
      }
      this.addEventListener('track', (e) => pcEvents.push({ t: now(), pc: n, event: 'track', kind: e.track.kind }));
    }
  }
  window.RTCPeerConnection = RecordedPC;
  if (window.webkitRTCPeerConnection) window.webkitRTCPeerConnection = RecordedPC;

  // Summarise a signalling message: drop the SDP body, keep the rest.
  const summary = (dir, data) => {
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return { t: now(), dir, raw: String(data).slice(0, 200) };
    }
    if (m && m.sdp && typeof m.sdp === 'object' && typeof m.sdp.sdp === 'string') {
      m = { ...m, sdp: { type: m.sdp.type, lines: m.sdp.sdp.split('\r\n').length, sdp: m.sdp.sdp } };
    }
    return { t: now(), dir, msg: m };
  };
  const OrigWS = window.WebSocket;
  class RecordedWS extends OrigWS {
    constructor(...args) {
      super(...args);
      signalling.push({ t: now(), dir: 'open?', url: String(args[0]) });
      this.addEventListener('open', () => signalling.push({ t: now(), dir: 'open' }));
      this.addEventListener('message', (e) => signalling.push(summary('in', e.data)));
      this.addEventListener('close', (e) =>
        signalling.push({ t: now(), dir: 'close', code: e.code, reason: e.reason, clean: e.wasClean }),
      );
      this.addEventListener('error', () => signalling.push({ t: now(), dir: 'error' }));
    }
    send(data) {
      signalling.push(summary('out', data));
      return super.send(data);
    }
  }
  window.WebSocket = RecordedWS;
}

// hls.js is loaded before OvenPlayer, as OvenPlayer's docs ask.
const { page, logs, version, close } = await openPage({
  html:
    '<!doctype html><html><body><div id="player"></div>' +
    '<script src="/hls.min.js"></script><script src="/ovenplayer.js"></script><script src="/clock.js"></script></body></html>',
  scripts: { '/hls.min.js': hlsSource, '/ovenplayer.js': opSource, '/clock.js': clockSource },
  webrtc: true,
  init: instrument,
});
try {
  const result = await page.evaluate(
    async ({ wsUrl, seconds }) => {
      const probe = window.__probe;
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const events = [];
      const errors = [];
      const created = performance.now();
      probe.t0 = created;
      const since = () => Math.round(performance.now() - created);
      const player = OvenPlayer.create('player', {
        autoStart: true,
        mute: true,
        autoFallback: false,
        sources: [{ type: 'webrtc', file: wsUrl }],
      });
      player.on('ready', () => events.push({ t: since(), event: 'ready' }));
      player.on('stateChanged', (d) => events.push({ t: since(), event: 'stateChanged', prev: d.prevstate, now: d.newstate }));
      player.on('error', (e) => {
        const err = { t: since(), code: e && e.code, message: e && e.message, reason: e && e.error && String(e.error.message || e.error) };
        errors.push(err);
        events.push({ event: 'error', ...err });
      });
      player.on('qualityLevelChanged', (d) => events.push({ t: since(), event: 'qualityLevelChanged', ...d }));

      async function sample() {
        const pc = probe.pcs[probe.pcs.length - 1];
        const s = { t: since(), framesDecoded: 0, audioPacketsReceived: 0, audioSamplesReceived: 0 };
        if (!pc) return s;
        const stats = await pc.getStats();
        let pairId;
        stats.forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'video') {
            s.framesDecoded = r.framesDecoded || 0;
            s.framesReceived = r.framesReceived;
            s.frameWidth = r.frameWidth;
            s.frameHeight = r.frameHeight;
            s.packetsLost = r.packetsLost;
            s.nackCount = r.nackCount;
            s.pliCount = r.pliCount;
            s.firCount = r.firCount;
            s.videoPacketsReceived = r.packetsReceived;
            s.keyFramesDecoded = r.keyFramesDecoded;
            s.videoCodec = r.codecId && stats.get(r.codecId) && stats.get(r.codecId).mimeType;
          } else if (r.type === 'inbound-rtp' && r.kind === 'audio') {
            s.audioPacketsReceived = r.packetsReceived || 0;
            s.audioSamplesReceived = r.totalSamplesReceived || 0;
            s.audioPacketsLost = r.packetsLost;
            s.audioCodec = r.codecId && stats.get(r.codecId) && stats.get(r.codecId).mimeType;
          } else if (r.type === 'transport') {
            pairId = r.selectedCandidatePairId;
            s.dtlsState = r.dtlsState;
            s.iceRole = r.iceRole;
          }
        });
        if (!pairId) stats.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pairId = r.id; });
        const pair = pairId && stats.get(pairId);
        if (pair) {
          const l = stats.get(pair.localCandidateId) || {};
          const rm = stats.get(pair.remoteCandidateId) || {};
          s.pair = {
            state: pair.state,
            nominated: pair.nominated,
            local: `${l.address || l.ip}:${l.port}/${l.protocol} ${l.candidateType}${l.relayProtocol ? `/${l.relayProtocol}` : ''}`,
            remote: `${rm.address || rm.ip}:${rm.port}/${rm.protocol} ${rm.candidateType}`,
            rtt: pair.currentRoundTripTime,
            requestsSent: pair.requestsSent,
            responsesReceived: pair.responsesReceived,
            requestsReceived: pair.requestsReceived,
          };
        }
        s.pairs = [];
        stats.forEach((r) => {
          if (r.type === 'candidate-pair') s.pairs.push(`${r.state}${r.nominated ? '*' : ''} req=${r.requestsSent} resp=${r.responsesReceived} rreq=${r.requestsReceived}`);
        });
        return s;
      }

      // Poll fast until the first frame (to time it), then every 500 ms.
      const series = [];
      let firstFrameMs = null;
      let last = null;
      let nextSample = 0;
      let clock = null;
      const end = created + seconds * 1000;
      while (performance.now() < end) {
        const s = await sample();
        last = s;
        if (firstFrameMs === null && s.framesDecoded > 0) firstFrameMs = s.t;
        // OvenPlayer makes its own <video>: read the clock from it once
        // it shows something.
        const shown = document.querySelector('#player video') || document.querySelector('video');
        if (clock === null && shown && shown.videoWidth > 0) clock = GlassClock.watch(shown);
        if (performance.now() - created >= nextSample) {
          series.push(s);
          nextSample += 500;
        }
        await sleep(firstFrameMs === null ? 50 : 500);
      }
      last = await sample();
      clock?.stop();
      const video = document.querySelector('#player video') || document.querySelector('video');
      const quality = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
      let qualityLevels = null;
      let currentQuality = null;
      try {
        qualityLevels = player.getQualityLevels();
        currentQuality = player.getCurrentQuality();
      } catch (e) {
        errors.push({ t: since(), message: `getQualityLevels threw: ${e.message}` });
      }
      const state = player.getState();
      const fd = series.map((s) => s.framesDecoded);
      fd.push(last.framesDecoded);
      const rising = fd.length >= 3 && fd[fd.length - 1] > fd[Math.floor(fd.length / 2)];
      const signalling = probe.signalling.map((m) => {
        if (m.msg && m.msg.sdp && m.msg.sdp.sdp) {
          const { sdp, ...rest } = m.msg.sdp;
          return { ...m, msg: { ...m.msg, sdp: rest } };
        }
        return m;
      });
      const offer = probe.signalling.find((m) => m.dir === 'in' && m.msg && m.msg.command === 'offer');
      const answer = probe.signalling.find((m) => m.dir === 'out' && m.msg && m.msg.command === 'answer');
      return {
        playing: !!(rising && last.audioPacketsReceived > 0 && errors.length === 0),
        seconds,
        firstFrameMs,
        clock: clock ? clock.summary() : null,
        framesDecoded: fd,
        frameWidth: last.frameWidth,
        frameHeight: last.frameHeight,
        videoPacketsReceived: last.videoPacketsReceived,
        packetsLost: last.packetsLost,
        nackCount: last.nackCount,
        pliCount: last.pliCount,
        keyFramesDecoded: last.keyFramesDecoded,
        audioPacketsReceived: last.audioPacketsReceived,
        audioSamplesReceived: last.audioSamplesReceived,
        audioPacketsSeries: series.map((s) => s.audioPacketsReceived),
        videoCodec: last.videoCodec,
        audioCodec: last.audioCodec,
        videoElement: video
          ? {
              width: video.videoWidth,
              height: video.videoHeight,
              currentTime: video.currentTime,
              paused: video.paused,
              muted: video.muted,
              totalVideoFrames: quality && quality.totalVideoFrames,
            }
          : null,
        state,
        errors,
        events,
        qualityLevels,
        currentQuality,
        candidatePair: last.pair || null,
        candidatePairs: last.pairs || [],
        dtlsState: last.dtlsState,
        iceRole: last.iceRole,
        pcEvents: probe.pcEvents,
        signalling,
        offerSdp: offer ? offer.msg.sdp.sdp : null,
        answerSdp: answer ? answer.msg.sdp.sdp : null,
      };
    },
    { wsUrl, seconds },
  );
  result.ovenplayer = opVersion;
  result.chromium = version;
  result.console = logs.slice(-30);
  if (result.playing && !process.env.OVENPLAYER_VERBOSE) {
    // Keep the line short when all is well; the SDPs are for diagnosis.
    delete result.offerSdp;
    delete result.answerSdp;
  }
  console.log(JSON.stringify(result));
} finally {
  await close();
}
