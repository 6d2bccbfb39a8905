/*
 * robotcam web client: several cameras (README "Several cameras").
 *
 * With one camera nothing here runs: the page is what it always was. With several, the one
 * RTCPeerConnection gets a receive-only video section per camera (one viewer, however many
 * cameras). The first section plays in the stage, with the sound, as before; each other section
 * gets a tile of its own. Every picture has a bar with its camera's name, a menu to show another
 * camera there (POST /api/camera: the daemon switches at that camera's next keyframe, with no
 * new offer), and its own state: live, or reconnecting when the daemon says that camera fails
 * (the `cameras` server-sent event), while the others play on. Tapping a picture makes it large;
 * tapping it again returns to the grid (a grid on a laptop, stacked on a phone).
 *
 * Test hooks: window.robotcamCameras = { names, choice, tiles, switchTo(index, name), offers }.
 */
'use strict';

(() => {
  const LIVE_WITHIN_MS = 1500; // a picture with no new frame for this long is not live
  const TICK_MS = 500;

  const cams = {
    names: [], // the daemon's cameras, in config order (GET /api/config)
    choice: [], // per video section: the camera the viewer wants there
    tiles: [], // per video section: { camera, state, detail, frames, element, video, ... }
    states: {}, // the daemon's `cameras` event: name -> { state, reason }
    session: null,
    offers: 0, // connections negotiated (switching must not add any)
    pc: null,
    transceivers: [], // ours: sections 1..n-1 (the stage's is app.js's)
  };
  window.robotcamCameras = cams;

  let events = null;

  // --- layout ---------------------------------------------------------------------------------

  function build(names) {
    const stage = document.getElementById('stage');
    let grid = document.getElementById('tiles');
    if (!grid) {
      grid = document.createElement('div');
      grid.id = 'tiles';
      grid.className = 'tiles';
      stage.parentNode.insertBefore(grid, stage);
      grid.appendChild(stage);
    }
    document.body.classList.add('multi');
    for (const tile of cams.tiles.slice(1)) tile.element.remove();
    cams.tiles = [];
    names.forEach((name, index) => {
      let element;
      let video;
      if (index === 0) {
        element = stage;
        video = document.getElementById('video');
      } else {
        element = document.createElement('section');
        element.className = 'tile';
        video = document.createElement('video');
        video.autoplay = true;
        video.muted = true;
        video.playsInline = true;
        video.setAttribute('playsinline', '');
        video.disablePictureInPicture = true;
        element.appendChild(video);
        grid.appendChild(element);
      }
      element.dataset.index = String(index);
      const bar = element.querySelector('.tile-bar') || document.createElement('div');
      bar.className = 'tile-bar';
      bar.innerHTML = '';
      const dot = document.createElement('span');
      dot.className = 'tile-dot';
      dot.setAttribute('aria-hidden', 'true');
      const menu = document.createElement('select');
      menu.className = 'tile-camera';
      menu.setAttribute('aria-label', `Camera shown in picture ${index + 1}`);
      for (const option of names) menu.add(new Option(option, option));
      menu.value = cams.choice[index];
      menu.addEventListener('change', () => switchTo(index, menu.value));
      const text = document.createElement('span');
      text.className = 'tile-state';
      text.setAttribute('role', 'status');
      bar.append(dot, menu, text);
      element.appendChild(bar);
      const tile = { camera: cams.choice[index], state: 'connecting', detail: '', frames: 0, lastFrameAt: 0,
        element, video, menu, text };
      cams.tiles.push(tile);
      countFrames(tile); // also makes the element point at this tile
      if (!video.robotcamClicks) { // the stage's element outlives rebuilds: one listener
        video.robotcamClicks = true;
        video.addEventListener('click', () => {
          if (cams.tiles.includes(video.robotcamTile)) enlarge(video.robotcamTile);
        });
      }
    });
  }

  function teardown() {
    const stage = document.getElementById('stage');
    const grid = document.getElementById('tiles');
    for (const tile of cams.tiles) {
      const bar = tile.element.querySelector('.tile-bar');
      if (bar) bar.remove();
      if (tile.element !== stage) tile.element.remove();
    }
    stage.classList.remove('large');
    delete stage.dataset.cameraState;
    if (grid) {
      grid.parentNode.insertBefore(stage, grid);
      grid.remove();
    }
    document.body.classList.remove('multi', 'has-large');
    if (events) events.close();
    events = null;
    cams.names = [];
    cams.choice = [];
    cams.tiles = [];
  }

  function enlarge(tile) {
    const large = !tile.element.classList.contains('large');
    for (const other of cams.tiles) other.element.classList.toggle('large', other === tile && large);
    document.body.classList.toggle('has-large', large);
  }

  /** Frames shown, per picture: requestVideoFrameCallback where there is one, else time. */
  function countFrames(tile) {
    const { video } = tile;
    video.robotcamTile = tile; // the stage's element outlives rebuilt tiles: one counter each
    if (video.robotcamCounting) return;
    video.robotcamCounting = true;
    const seen = () => {
      video.robotcamTile.frames += 1;
      video.robotcamTile.lastFrameAt = performance.now();
    };
    if (typeof video.requestVideoFrameCallback === 'function') {
      const loop = () => {
        seen();
        video.requestVideoFrameCallback(loop);
      };
      video.requestVideoFrameCallback(loop);
    } else {
      let last = -1;
      video.addEventListener('timeupdate', () => {
        if (video.currentTime !== last) {
          last = video.currentTime;
          seen();
        }
      });
    }
  }

  // --- each picture's state -------------------------------------------------------------------

  /** Why the daemon says a camera gives no picture, or null. */
  function problem(name) {
    const s = cams.states[name];
    if (!s || s.state === 'running') return null;
    return s.reason ? `${s.state}: ${s.reason}` : s.state;
  }

  function render() {
    const now = performance.now();
    cams.tiles.forEach((tile, index) => {
      const live = tile.lastFrameAt && now - tile.lastFrameAt < LIVE_WITHIN_MS;
      const trouble = problem(tile.camera);
      let state;
      let text;
      if (live) {
        state = 'live';
        text = 'Live';
      } else if (trouble) {
        state = 'reconnecting';
        text = `Reconnecting — ${trouble}`;
      } else if (!cams.session) {
        state = 'connecting';
        text = 'Connecting…';
      } else {
        state = tile.frames ? 'poor' : 'connecting';
        text = tile.frames ? 'No new picture' : 'Waiting for the picture…';
      }
      tile.state = state;
      tile.detail = trouble || '';
      tile.element.dataset.cameraState = state;
      // the stage has the connection's own status line; its bar says only what differs
      if (index === 0 && state !== 'reconnecting') text = '';
      if (tile.text.textContent !== text) tile.text.textContent = text;
      if (tile.menu.value !== tile.camera) tile.menu.value = tile.camera;
    });
  }

  function listen() {
    if (events || typeof EventSource !== 'function') return;
    events = new EventSource('/api/events');
    events.addEventListener('cameras', (event) => {
      try {
        cams.states = JSON.parse(event.data) || {};
      } catch (err) {
        return;
      }
      // a reload added or removed a camera: connect again for the new set (a removed camera's
      // section has ended; a new one needs a section of its own)
      const same = (x, y) => x.slice().sort().join('\n') === y.slice().sort().join('\n');
      if (cams.names.length && !same(Object.keys(cams.states), cams.names) && window.robotcam) {
        window.robotcam.reconnect();
        return;
      }
      render();
    });
  }

  // --- switching ------------------------------------------------------------------------------

  async function post(index, name) {
    const response = await fetch('/api/camera', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ session: cams.session, video: index, camera: name }),
      cache: 'no-store',
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    return body;
  }

  /** Show camera `name` in picture `index`; remembered across reconnects. */
  async function switchTo(index, name) {
    if (!cams.names.includes(name) || index >= cams.choice.length) return false;
    cams.choice[index] = name;
    const tile = cams.tiles[index];
    if (!cams.session) {
      if (tile) tile.camera = name;
      render();
      return true; // applied when the connection is up
    }
    try {
      await post(index, name);
      if (tile) tile.camera = name;
      render();
      return true;
    } catch (err) {
      if (tile) tile.text.textContent = `Cannot switch: ${err.message}`;
      return false;
    }
  }
  cams.switchTo = switchTo;

  // --- the hooks app.js calls -----------------------------------------------------------------

  /** Before the offer: one more receive-only video section per further camera. */
  cams.attach = (pc, clientConfig) => {
    const names = Array.isArray(clientConfig.cameras) ? clientConfig.cameras : [];
    cams.pc = pc;
    cams.session = null;
    cams.transceivers = [];
    if (names.length < 2) {
      if (cams.names.length) teardown(); // a reload left one camera: the plain page again
      return;
    }
    if (names.join('\n') !== cams.names.join('\n')) {
      cams.names = names.slice();
      cams.choice = names.slice();
      build(names);
    }
    for (let i = 1; i < names.length; i += 1) {
      cams.transceivers.push(pc.addTransceiver('video', { direction: 'recvonly' }));
    }
    listen();
  };

  /** A track of one of our sections: it plays in that section's tile (true: handled here). */
  cams.onTrack = (event) => {
    const index = cams.transceivers.indexOf(event.transceiver);
    if (index < 0) return false;
    const tile = cams.tiles[index + 1];
    const stream = new MediaStream([event.track]);
    tile.video.srcObject = stream;
    tile.video.play().catch(() => {});
    return true;
  };

  /** The answer is applied: the daemon showed the cameras in config order; put back what the
   * viewer chose before a reconnect. */
  cams.connected = (pc, session) => {
    if (pc !== cams.pc || !cams.transceivers.length) return;
    cams.session = session;
    cams.offers += 1;
    cams.choice.forEach((name, index) => {
      const tile = cams.tiles[index];
      if (tile) tile.camera = cams.names[index];
      if (name !== cams.names[index]) switchTo(index, name);
    });
    render();
  };

  cams.detach = (pc) => {
    if (pc !== cams.pc) return;
    cams.pc = null;
    cams.session = null;
    cams.transceivers = [];
  };

  /** The stage's camera fails at the daemon: app.js keeps the connection (the other cameras
   * play on) and says this instead of starting over. */
  cams.stageProblem = () => (cams.tiles.length ? problem(cams.tiles[0].camera) : null);

  setInterval(render, TICK_MS);
})();
