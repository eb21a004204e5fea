// Reads the glass-to-glass clock (tests/common/clock.rs describes the code)
// from a playing <video>, in the page: every frame the browser presents
// (requestVideoFrameCallback) is drawn to a canvas, the row of blocks along
// its top is decoded, and its age is taken at the frame's expected display
// time. Nothing the server stamps is used.
//
//   const watch = GlassClock.watch(video);  ...  watch.summary()
//
// summary(): { frames, read, unreadable, backwards, agesMs (every read),
//              p50Ms, p95Ms, spanMs (last code - first code), size }
(() => {
  const BLOCKS = 26;
  const WRAP = 1000000;

  // The code in RGBA `data` of the top `strip` rows of a `width`-wide
  // picture, or null if the marker or the check does not read.
  function read(data, width, strip) {
    const bits = [];
    for (let b = 0; b < BLOCKS; b++) {
      const left = (width * b) / BLOCKS;
      const x0 = Math.floor(left + (width / BLOCKS) * 0.3);
      const x1 = Math.floor(left + (width / BLOCKS) * 0.7);
      let sum = 0;
      let n = 0;
      for (let y = Math.floor(strip / 4); y < Math.floor((strip * 3) / 4); y++) {
        for (let x = x0; x <= x1; x++) {
          const i = (y * width + x) * 4;
          sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
          n++;
        }
      }
      bits.push(sum > 128 * Math.max(n, 1));
    }
    if (!bits[0] || bits[1]) return null;
    const number = (bs) => bs.reduce((v, b) => v * 2 + (b ? 1 : 0), 0);
    const ms = number(bits.slice(2, 22));
    return ms < WRAP && ms % 13 === number(bits.slice(22, 26)) ? ms : null;
  }

  // Age in ms of a picture showing `code` at Unix time `nowMs`; a code up
  // to a minute ahead is a small negative age.
  function age(code, nowMs) {
    const a = (((Math.floor(nowMs) % WRAP) + WRAP - code) % WRAP);
    return a > WRAP - 60000 ? a - WRAP : a;
  }

  const quantile = (sorted, q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] : null);

  function watch(video) {
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const s = { frames: 0, read: 0, unreadable: 0, backwards: 0, agesMs: [], first: null, last: null, size: null };
    let stopped = false;
    const onFrame = (_now, meta) => {
      if (stopped) return;
      s.frames++;
      const w = video.videoWidth;
      const h = video.videoHeight;
      const strip = Math.floor(h / 8);
      if (w > 0 && strip > 1) {
        if (canvas.width !== w || canvas.height !== strip) {
          canvas.width = w;
          canvas.height = strip;
        }
        s.size = `${w}x${h}`;
        ctx.drawImage(video, 0, 0, w, strip, 0, 0, w, strip);
        const code = read(ctx.getImageData(0, 0, w, strip).data, w, strip);
        if (code === null) {
          s.unreadable++;
        } else {
          const shown = performance.timeOrigin + meta.expectedDisplayTime;
          s.read++;
          s.agesMs.push(age(code, shown));
          if (s.first === null) s.first = code;
          // An older picture after a newer one.
          if (s.last !== null && (code - s.last + WRAP) % WRAP > WRAP / 2) s.backwards++;
          s.last = code;
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    return {
      stop() {
        stopped = true;
      },
      summary() {
        const sorted = [...s.agesMs].sort((a, b) => a - b);
        return {
          frames: s.frames,
          read: s.read,
          unreadable: s.unreadable,
          backwards: s.backwards,
          size: s.size,
          agesMs: s.agesMs.map(Math.round),
          p50Ms: quantile(sorted, 0.5),
          p95Ms: quantile(sorted, 0.95),
          spanMs: s.first === null ? 0 : (s.last - s.first + WRAP) % WRAP,
        };
      },
    };
  }

  window.GlassClock = { watch, read, age };
})();
