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
// A page can get round both without changing hls.js: a playing loader,
// loading parts, idle for 500 ms with little buffered ahead and the part at
// its buffer's end listed but not loaded, forgets the segment that holds
// the buffer's end and is pointed at that end; it then asks for the part.
// It is helped once per part. Each intervention is kept (`interventions`, with
// the tracker's state as evidence). It reads hls.js internals, read-only
// except for those two steps, and does nothing when they are missing.
//
// Used by the console's player (app.js, on OvenPlayer's hls.js) and by the
// hls.js tests (tests/browser/hlsjs.mjs), which bound the interventions.
(function () {
  const IDLE_MS = 500;

  // A loader stuck as above: idle, loading parts (not whole segments),
  // playing (not paused), with little buffered ahead, and the part at its
  // buffer's end listed but not loaded.
  function stuck(hls, controller, buffer) {
    const media = hls.media;
    if (!controller || controller.state !== 'IDLE' || !controller.loadingParts) return null;
    if (!media || media.paused || !controller.fragmentTracker) return null;
    const details = controller.getLevelDetails && controller.getLevelDetails();
    if (!details || !details.live || !details.partList) return null;
    if (!buffer || !buffer.buffered || !buffer.buffered.length) return null;
    const end = buffer.buffered.end(buffer.buffered.length - 1);
    if (end - media.currentTime > 2 * details.targetduration) return null;
    const part = details.partList.find((p) => !p.loaded && p.start <= end + 0.02 && end + 0.02 < p.start + p.duration);
    if (!part) return null;
    const holding = details.fragments.find((f) => f.start <= end && end < f.start + f.duration) || part.fragment;
    return { holding, part, end, id: `${part.fragment.sn}.${part.index}` };
  }

  function attach(hls, period = 100) {
    const interventions = [];
    // Per loader: the part it has waited for, since when, and whether it
    // was already helped with it (once per part).
    const waits = new Map();
    const watch = (name, controller, buffer) => {
      const found = stuck(hls, controller, buffer);
      const wait = waits.get(name);
      if (!found) {
        waits.delete(name);
        return;
      }
      if (!wait || wait.id !== found.id) {
        waits.set(name, { id: found.id, since: performance.now(), helped: false });
        return;
      }
      if (wait.helped || performance.now() - wait.since < IDLE_MS) return;
      wait.helped = true;
      interventions.push({
        at: (performance.now() / 1000).toFixed(2),
        loader: name,
        part: found.id,
        holding: found.holding.sn,
        bufferEnd: found.end,
        tracked: controller.fragmentTracker.getState(found.holding),
        nextLoadPosition: controller.nextLoadPosition,
      });
      controller.fragmentTracker.removeFragment(found.holding);
      controller.nextLoadPosition = found.end;
      controller.tick();
    };
    // A SourceBuffer removed from its MediaSource (a reset, a detach)
    // throws when read: that loader is skipped this time, not the other.
    const safely = (name, controller, buffer) => {
      try {
        watch(name, controller, buffer);
      } catch (e) {
        waits.delete(name);
      }
    };
    const timer = setInterval(() => {
      const main = hls.streamController;
      safely('main', main, main && (main.videoBuffer || main.mediaBuffer));
      const audio = hls.audioStreamController;
      safely('audio', audio, audio && audio.mediaBuffer);
    }, period);
    return { interventions, stop: () => clearInterval(timer) };
  }

  self.StreamdHlsWatchdog = { attach };
})();
