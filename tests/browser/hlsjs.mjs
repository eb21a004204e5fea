// Plays an LL-HLS URL with hls.js in headless Chromium and prints, as one
// JSON line, what a viewer would see: how far playback advanced, the
// glass-to-glass latency read from the picture (`clock`: the publisher's
// wall clock drawn into every frame, see clock.js), stalls and errors.
// `serverStampedLatencies` is what hls.js itself would say (Date.now() -
// hls.playingDate, from EXT-X-PROGRAM-DATE-TIME, which the server stamps at
// ingest), kept to compare the two.
//
// usage: node hlsjs.mjs URL SECONDS [switch]
//
// With `switch`, the level is forced to the next one every 2 s (hls.nextLevel:
// at the next fragment boundary, as an ABR controller would), and the levels
// actually switched to are reported.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { openPage } from './chromium.mjs';

const require = createRequire(import.meta.url);
const hlsSource = readFileSync(process.env.HLSJS_FILE || require.resolve('hls.js/dist/hls.min.js'));
const clockSource = readFileSync(new URL('./clock.js', import.meta.url));
const watchdogSource = readFileSync(new URL('../../web/src/hls-watchdog.js', import.meta.url));
const [url, secondsArg, mode] = process.argv.slice(2);
// HLSJS_DEBUG=1: hls.js's own log, timestamped, comes with the report
// (for explaining a stall; too verbose for every run). HLSJS_FILE=path
// plays with another hls.js build (an instrumented copy, say).
const debug = process.env.HLSJS_DEBUG === '1';
const seconds = Number(secondsArg || 10);
if (!url) {
  console.error('usage: node hlsjs.mjs URL SECONDS');
  process.exit(2);
}

const { page, logs, close } = await openPage({
  html: '<!doctype html><html><body><video id="v" muted playsinline></video><script src="/hls.min.js"></script><script src="/hls-watchdog.js"></script><script src="/clock.js"></script></body></html>',
  scripts: { '/hls.min.js': hlsSource, '/hls-watchdog.js': watchdogSource, '/clock.js': clockSource },
});
try {
  const result = await page.evaluate(
    async ({ url, seconds, mode, debug }) => {
      // Every request's timing is kept, for the protocol each went over.
      performance.setResourceTimingBufferSize(100000);
      const video = document.getElementById('v');
      const debugLog = [];
      const logTo = (level) => (...args) => {
        if (debugLog.length < 20000) debugLog.push(`${(performance.now() / 1000).toFixed(3)} ${level} ${args.join(' ')}`);
      };
      const hls = new Hls({
        lowLatencyMode: true,
        debug: debug ? { debug: logTo('D'), log: logTo('L'), info: logTo('I'), warn: logTo('W'), error: logTo('E') } : false,
      });
      const errors = [];
      // Non-fatal errors hls.js recovered from, kept to explain a stall.
      const warnings = [];
      let stalls = 0;
      hls.on(Hls.Events.ERROR, (_e, d) => {
        const what = `${d.type}/${d.details} ${d.response?.code ?? ''} ${d.frag?.relurl ?? d.context?.url ?? ''}`;
        if (d.fatal) errors.push(what);
        else if (warnings.length < 20) warnings.push(`${(performance.now() / 1000).toFixed(2)} ${what}`);
      });
      // The last loader events, to explain a stall when one happens.
      const trail = [];
      const esView = (e) => e && { startPTS: e.startPTS, endPTS: e.endPTS, startDTS: e.startDTS };
      const fragView = (f) => f && {
        sn: f.sn, cc: f.cc, start: f.start, end: f.end, level: f.level,
        video: esView(f.elementaryStreams?.video), audio: esView(f.elementaryStreams?.audio),
      };
      const controllerView = (c) => c && {
        state: c.state,
        mainFragLoading: fragView(c.mainFragLoading?.frag),
        fragCurrent: fragView(c.fragCurrent),
        loadingParts: c.loadingParts,
        nextLoadPosition: c.nextLoadPosition,
        previous: fragView(c.fragPrevious),
        waiting: fragView(c.waitingData?.frag),
      };
      const playlistView = (d) => d && {
        startSN: d.startSN,
        endSN: d.endSN,
        fragments: d.fragments.slice(-3).map(fragView),
        pdt: d.fragments.slice(-3).map((f) => f.programDateTime),
        parts: d.partList?.slice(-3).map((p) => ({ sn: p.fragment.sn, index: p.index, start: p.start, duration: p.duration })),
        ptsKnown: d.PTSKnown,
        // Every listed part: sn.index, L loaded, I independent, ~ its
        // fragment is not the listed one.
        partsState: d.partList?.map((p) => `${p.fragment.sn}.${p.index}${p.loaded ? 'L' : ''}${p.independent ? 'I' : ''}${p.fragment === d.fragments.find((f) => f.sn === p.fragment.sn) ? '' : '~'}`).join(' '),
        age: d.age,
      };
      // What the player had when it stalled (the first three stalls).
      const stallSnapshots = [];
      const ranges = () => Array.from({ length: video.buffered.length }, (_, i) => [video.buffered.start(i), video.buffered.end(i)]);
      video.addEventListener('waiting', () => {
        stalls++;
        if (stallSnapshots.length < 3) {
          stallSnapshots.push({
            at: (performance.now() / 1000).toFixed(2),
            currentTime: video.currentTime,
            buffered: ranges(),
            trail: trail.slice(-30),
            // hls.js's own view (internal fields, read only to explain).
            audio: controllerView(hls.audioStreamController),
            main: controllerView(hls.streamController),
            audioPlaylist: playlistView(hls.audioTracks[hls.audioTrack]?.details),
            mainPlaylist: playlistView(hls.levels[hls.currentLevel]?.details),
          });
        }
      });
      const note = (what) => {
        trail.push(`${(performance.now() / 1000).toFixed(2)} ${what}`);
        if (trail.length > 40) trail.shift();
      };
      const fragName = (d) => `${d.frag?.type} ${d.frag?.sn}${d.part ? '.' + d.part.index : ''}`;
      hls.on(Hls.Events.FRAG_LOADING, (_e, d) => note(`loading ${fragName(d)}`));
      hls.on(Hls.Events.FRAG_BUFFERED, (_e, d) => note(`buffered ${fragName(d)}`));
      hls.on(Hls.Events.LEVEL_UPDATED, (_e, d) => note(`level ${d.details?.endSN}.${d.details?.endPart?.index ?? ''}`));
      hls.on(Hls.Events.AUDIO_TRACK_UPDATED ?? 'audioTrackUpdated', (_e, d) => note(`audio ${d.details?.endSN}.${d.details?.endPart?.index ?? ''}`));
      const switched = [];
      hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => switched.push(d.level));
      // The console's watchdog for hls.js's stuck loaders (see
      // web/src/hls-watchdog.js); its interventions are reported.
      const watchdog = StreamdHlsWatchdog.attach(hls);
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
      const clock = GlassClock.watch(video);
      stalls = 0;
      stallSnapshots.length = 0;
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
      clock.stop();
      watchdog.stop();
      const levels = hls.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate }));
      return {
        startedAt: start,
        advanced: video.currentTime - start,
        clock: clock.summary(),
        serverStampedLatencies: latencies,
        hlsLatency: hls.latency,
        targetLatency: hls.targetLatency,
        stalls,
        unstuck: watchdog.interventions,
        errors,
        levels,
        switched,
        audioTracks: hls.audioTracks.length,
        warnings,
        trail: stalls ? trail : [],
        stallSnapshots,
        // The same view at the end, when there was a stall.
        finalState: stalls ? {
          audio: controllerView(hls.audioStreamController),
          main: controllerView(hls.streamController),
          audioPlaylist: playlistView(hls.audioTracks[hls.audioTrack]?.details),
          mainPlaylist: playlistView(hls.levels[hls.currentLevel]?.details),
        } : null,
        debugLog: debug ? debugLog : undefined,
        buffered: ranges(),
        currentTime: video.currentTime,
        decodedFrames: video.getVideoPlaybackQuality().totalVideoFrames,
        // Requests to the stream's origin by protocol (ALPN: "h2",
        // "http/1.1"), from Resource Timing.
        protocols: performance
          .getEntriesByType('resource')
          .filter((e) => e.name.startsWith(new URL(url).origin))
          .reduce((m, e) => ({ ...m, [e.nextHopProtocol || 'unknown']: (m[e.nextHopProtocol || 'unknown'] || 0) + 1 }), {}),
        droppedFrames: video.getVideoPlaybackQuality().droppedVideoFrames,
      };
    },
    { url, seconds, mode, debug },
  );
  result.console = logs.slice(-20);
  console.log(JSON.stringify(result));
} finally {
  await close();
}
