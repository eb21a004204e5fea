// streamd console: streams through the REST API (/api), and OvenPlayer on
// the selected stream, WebRTC first with automatic fallback to LL-HLS;
// the stream's recordings, played back as HLS VOD.
(function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  let token = localStorage.getItem('streamd.token') || '';
  let selected = null;
  let player = null;
  // The selected stream's playback URLs (and token, if private).
  let playback = null;
  $('token').value = token;

  function say(text, error) {
    $('message').textContent = text || '';
    $('message').className = error ? 'error' : '';
  }

  async function api(method, path, body) {
    const r = await fetch('/api' + path, {
      method,
      headers: Object.assign(
        { authorization: 'Bearer ' + token },
        body ? { 'content-type': 'application/json' } : {},
      ),
      body: body ? JSON.stringify(body) : undefined,
    });
    if (r.status === 204) return null;
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || 'HTTP ' + r.status);
    return data;
  }

  function cell(text) {
    const td = document.createElement('td');
    td.textContent = text;
    return td;
  }

  async function refresh() {
    if (!token) return say('Paste an API token (streamd token) to begin.');
    try {
      const streams = await api('GET', '/streams');
      const rows = $('stream-rows');
      rows.replaceChildren();
      for (const s of streams) {
        const tr = document.createElement('tr');
        tr.dataset.id = s.id;
        tr.append(cell(s.name), cell(s.id), cell(s.live ? 'live' : '—'), cell(String(s.viewers)));
        const td = document.createElement('td');
        const open = document.createElement('button');
        open.type = 'button';
        open.textContent = 'Open';
        open.className = 'open';
        open.onclick = () => show(s);
        const del = document.createElement('button');
        del.type = 'button';
        del.textContent = 'Delete';
        del.onclick = async () => {
          if (!confirm('Delete ' + s.name + '?')) return;
          await api('DELETE', '/streams/' + s.id).catch((e) => say(e.message, true));
          if (selected && selected.id === s.id) hide();
          refresh();
        };
        td.append(open, ' ', del);
        tr.append(td);
        rows.append(tr);
      }
      say(streams.length ? '' : 'No streams yet: create one.');
    } catch (e) {
      say(e.message, true);
    }
  }

  function hide() {
    selected = null;
    if (player) player.remove();
    player = null;
    $('details').hidden = true;
  }

  function showKey(k) {
    $('obs-server').textContent = k.obs.server;
    $('obs-key').textContent = k.streamKey;
    $('ffmpeg-url').textContent = k.obs.url;
  }

  async function show(s) {
    try {
      const [k, p] = await Promise.all([
        api('GET', '/streams/' + s.id + '/key'),
        api('GET', '/streams/' + s.id + '/playback'),
      ]);
      selected = s;
      $('details').hidden = false;
      $('details').dataset.id = s.id;
      $('details-title').textContent = s.name + (s.isPrivate ? ' (private)' : '');
      showKey(k);
      $('webrtc-url').textContent = p.webrtc;
      $('llhls-url').textContent = p.llhls;
      playback = p;
      watch(p);
      recordings(s, p);
    } catch (e) {
      say(e.message, true);
    }
  }

  function size(bytes) {
    return bytes >= 1e9 ? (bytes / 1e9).toFixed(2) + ' GB' : (bytes / 1e6).toFixed(1) + ' MB';
  }

  function clock(ms) {
    const s = Math.round(ms / 1000);
    return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
  }

  // The stream's recordings, newest first: each plays in the player (as
  // HLS VOD, with the stream's playback token if it is private), downloads
  // as one MP4, or is deleted.
  async function recordings(s, p) {
    const rows = $('recording-rows');
    let list;
    try {
      list = await api('GET', '/streams/' + s.id + '/recordings');
    } catch (e) {
      return say(e.message, true);
    }
    const query = p.token ? '?token=' + encodeURIComponent(p.token) : '';
    rows.replaceChildren();
    for (const r of list) {
      const tr = document.createElement('tr');
      tr.dataset.id = r.id;
      tr.dataset.status = r.status;
      tr.append(
        cell(new Date(r.startedAt).toLocaleString()),
        cell(r.status === 'recording' ? '…' : clock(r.durationMs)),
        cell(size(r.bytes)),
        cell(r.status),
      );
      const td = document.createElement('td');
      const play = document.createElement('button');
      play.type = 'button';
      play.textContent = 'Play';
      play.className = 'play';
      play.onclick = () => watchVod(location.origin + r.playbackUrl + query);
      const download = document.createElement('a');
      download.textContent = 'MP4';
      download.href = '/vod/' + r.id + '/recording.mp4' + query;
      const del = document.createElement('button');
      del.type = 'button';
      del.textContent = 'Delete';
      del.onclick = async () => {
        if (!confirm('Delete this recording?')) return;
        await api('DELETE', '/recordings/' + r.id).catch((e) => say(e.message, true));
        recordings(s, p);
      };
      td.append(play, ' ', download, ' ', del);
      tr.append(td);
      rows.append(tr);
    }
  }

  function watchVod(url) {
    openPlayer([{ type: 'hls', file: url, label: 'VOD' }], {});
  }

  // WebRTC first; OvenPlayer moves to the next source by itself when
  // WebRTC fails (autoFallback).
  function watch(p) {
    openPlayer(
      [
        { type: 'webrtc', file: p.webrtc, label: 'WebRTC' },
        { type: 'hls', file: p.llhls, label: 'LL-HLS' },
      ],
      { lowLatencyMode: true },
    );
  }

  // The hls.js instance OvenPlayer plays LL-HLS with, watched for the
  // stuck loaders of hls-watchdog.js.
  let watched = null;
  let watchdog = null;
  function watchHls() {
    const hls = player && player.getMseInstance && player.getMseInstance();
    if (!hls || hls === watched || !hls.streamController || !self.StreamdHlsWatchdog) return;
    if (watchdog) watchdog.stop();
    watched = hls;
    watchdog = StreamdHlsWatchdog.attach(hls);
  }
  // Its interventions, for tests and the curious (an intervention that
  // averts a stall changes no player state, so this is polled).
  setInterval(() => {
    watchHls();
    if (watchdog) $('player-status').dataset.unstuck = String(watchdog.interventions.length);
  }, 500);

  function openPlayer(sources, hlsConfig) {
    if (watchdog) watchdog.stop();
    watched = watchdog = null;
    if (player) player.remove();
    $('player-box').replaceChildren(Object.assign(document.createElement('div'), { id: 'player' }));
    player = OvenPlayer.create('player', {
      autoStart: true,
      autoFallback: true,
      mute: true,
      hlsConfig,
      sources,
    });
    window.streamdPlayer = player;
    // The sources the player went through, in order (shown in a data
    // attribute for tests and the curious).
    const tried = [];
    const status = () => {
      const sources = player.getSources() || [];
      const src = sources[player.getCurrentSource()] || {};
      if (src.label && tried[tried.length - 1] !== src.label) tried.push(src.label);
      $('player-status').dataset.tried = tried.join(',');
      $('player-status').textContent = player.getState() + ' · ' + (src.label || '');
      $('player-status').dataset.state = player.getState();
      $('player-status').dataset.source = src.label || '';
    };
    player.on('stateChanged', status);
    player.on('sourceChanged', status);
    player.on('error', (e) => {
      $('player-status').dataset.lastError = (e && (e.code + ' ' + e.message)) || 'error';
    });
    status();
  }

  $('token-form').onsubmit = (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    localStorage.setItem('streamd.token', token);
    refresh();
  };
  $('create-form').onsubmit = async (e) => {
    e.preventDefault();
    try {
      const s = await api('POST', '/streams', {
        name: $('name').value,
        description: $('description').value,
        isPrivate: $('private').checked,
      });
      $('name').value = '';
      $('description').value = '';
      await refresh();
      await show(s);
      say('Created ' + s.name + '. Publish with the key below.');
    } catch (err) {
      say(err.message, true);
    }
  };
  $('rotate').onclick = async () => {
    if (!selected) return;
    try {
      showKey(await api('POST', '/streams/' + selected.id + '/key:rotate'));
      say('New key: the old one no longer publishes.');
    } catch (e) {
      say(e.message, true);
    }
  };
  $('refresh').onclick = () => {
    refresh();
    if (selected && playback) recordings(selected, playback);
  };
  $('live-again').onclick = () => playback && watch(playback);
  refresh();
})();
