// A watchdog for two ways hls.js 1.7.4 (the newest) leaves a live LL-HLS
// loader idle for good, with the next part listed and never requested.
// Both were read in hls.js's debug log and source, on starts against
// streamd alone and through a cache (a few starts in a hundred, one in four
// on a loaded machine):
// - the playlist update that completes a segment lands while an earlier
//   part of it is still being loaded: the part is tracked as the whole
//   segment (the fragment has a URL by then, and the parsed end stands for
//   its end), so the segment counts as fully buffered and its last parts
//   are never asked for (video or audio);
// - alternate audio: hls.js re-aligns the audio playlist on every update by
//   EXT-X-PROGRAM-DATE-TIME, which has millisecond precision, while AAC
//   segments end on 1024-sample frames (23.22 ms at 44.1 kHz). A segment
//   can then end up to a millisecond after the audio actually buffered, and
//   the loader, looking up the buffer's end with no tolerance, keeps
//   finding that fully buffered segment and loads nothing.
// A page can get round both without changing hls.js: a loader idle for
// 500 ms with the part at its buffer's end listed but not loaded forgets
// the segment that holds the buffer's end and is pointed at that end; it
// then asks for the part. Each intervention is kept (`interventions`, with
// the tracker's state as evidence). It reads hls.js internals, read-only
// except for those two steps, and does nothing when they are missing.
//
// Used by the console's player (app.js, on OvenPlayer's hls.js) and by the
// hls.js tests (tests/browser/hlsjs.mjs), which bound the interventions.
(function () {
  const IDLE_MS = 500;

  function stuck(controller, details, buffer) {
    if (!controller || controller.state !== 'IDLE' || !details || !details.live || !details.partList) return null;
    if (!buffer || !buffer.buffered || !buffer.buffered.length || !controller.fragmentTracker) return null;
    const end = buffer.buffered.end(buffer.buffered.length - 1);
    const part = details.partList.find((p) => !p.loaded && p.start <= end + 0.02 && end + 0.02 < p.start + p.duration);
    if (!part) return null;
    const holding = details.fragments.find((f) => f.start <= end && end < f.start + f.duration) || part.fragment;
    return { holding, part, end };
  }

  function attach(hls, period = 100) {
    const interventions = [];
    const since = new Map();
    const watch = (name, controller, details, buffer) => {
      const found = stuck(controller, details, buffer);
      if (!found) {
        since.delete(name);
        return;
      }
      if (!since.has(name)) since.set(name, performance.now());
      if (performance.now() - since.get(name) < IDLE_MS) return;
      since.delete(name);
      interventions.push({
        at: (performance.now() / 1000).toFixed(2),
        loader: name,
        part: `${found.part.fragment.sn}.${found.part.index}`,
        holding: found.holding.sn,
        bufferEnd: found.end,
        tracked: controller.fragmentTracker.getState(found.holding),
        nextLoadPosition: controller.nextLoadPosition,
      });
      controller.fragmentTracker.removeFragment(found.holding);
      controller.nextLoadPosition = found.end;
      controller.tick();
    };
    const timer = setInterval(() => {
      const main = hls.streamController;
      const level = hls.levels && hls.levels[hls.currentLevel];
      watch('main', main, level && level.details, main && (main.videoBuffer || main.mediaBuffer));
      const audio = hls.audioStreamController;
      const track = hls.audioTracks && hls.audioTracks[hls.audioTrack];
      watch('audio', audio, track && track.details, audio && audio.mediaBuffer);
    }, period);
    return { interventions, stop: () => clearInterval(timer) };
  }

  self.StreamdHlsWatchdog = { attach };
})();
