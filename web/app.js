/*
 * robotcam web client: one receive-only WebRTC connection to the daemon that served this page.
 *
 * Connects on load, plays muted inline, and keeps itself connected: a connection that fails,
 * stays disconnected, or stops delivering frames is closed and replaced, with backoff while
 * the daemon is down. No dependencies and no build step (ES2020, classic script).
 *
 * Access control: the page asks GET /api/session who it is; without the 'view' permission it
 * shows the sign-in form and connects only after POST /api/login. A 401 later (the sign-in
 * ended) brings the form back.
 *
 * Test hooks: window.robotcam = { pc, state, detail, reconnects, lastError, stats, health, account }.
 */
'use strict';

(() => {
  const SETTINGS = {
    iceGatheringTimeoutMs: 2000, // send the offer with what we have after this
    offerTimeoutMs: 10000, // POST /offer
    firstFrameTimeoutMs: 15000, // answer applied, no frame decoded yet: start over
    frozenTimeoutMs: 5000, // frames stopped being decoded: start over
    poorAfterMs: 1500, // no new frame this long while connected: say so, never "Live"
    disconnectedGraceMs: 4000, // 'disconnected' often recovers by itself; wait this long
    backoffInitialMs: 1000,
    backoffMaxMs: 10000,
    statsIntervalMs: 1000,
    healthIntervalMs: 5000,
    healthTimeoutMs: 4000,
  };

  // What the page receives, one recvonly transceiver each. Tracks of every kind end up in the
  // one MediaStream the <video> element plays; sound is added by web/sound.js (sendrecv, for
  // talk-back), so picture and sound play from one element, in sync. With several cameras,
  // web/cameras.js adds a video section for each further camera, shown in tiles of its own.
  const RECEIVE_KINDS = ['video'];

  const $ = (id) => document.getElementById(id);
  const ui = {
    stage: $('stage'),
    video: $('video'),
    status: $('status'),
    statusText: $('status-text'),
    stats: $('stats'),
    statsButton: $('stats-button'),
    fullscreenButton: $('fullscreen-button'),
    playButton: $('play-button'),
    lastFrame: $('last-frame'),
    footer: $('footer'),
    footerText: $('footer-text'),
    login: $('login'),
    loginUser: $('login-user'),
    loginPassword: $('login-password'),
    loginError: $('login-error'),
    loginSubmit: $('login-submit'),
    signinButton: $('signin-button'),
    signoutButton: $('signout-button'),
  };
  const video = ui.video;

  const robotcam = {
    pc: null, // the current RTCPeerConnection (null between attempts)
    state: 'connecting', // 'connecting' | 'live' | 'poor' | 'camera' | 'reconnecting' | 'error' | 'signed-out'
    detail: '', // why, for the states that have a reason
    reconnects: 0, // connections started after the first one
    lastError: null,
    stats: null, // the latest summary shown in the stats overlay
    health: null, // the latest GET /health answer
    account: { auth: false, user: null, permissions: [] }, // GET /api/session
    reconnect: () => connect(),
  };
  window.robotcam = robotcam;

  // ---------------------------------------------------------------------------------------
  // State shown to the user

  let retryTimer = 0;
  let countdownTimer = 0;
  let retryAt = 0;

  function setState(state, detail = '') {
    robotcam.state = state;
    robotcam.detail = detail;
    document.body.dataset.state = state;
    ui.status.dataset.state = state;
    renderStatus();
  }

  function renderStatus() {
    const { state, detail } = robotcam;
    let text;
    if (state === 'live') {
      text = 'Live';
    } else if (state === 'poor') {
      text = detail ? `Poor connection — ${detail}` : 'Poor connection';
    } else if (state === 'camera') {
      text = detail;
    } else if (state === 'signed-out') {
      text = detail || 'Sign in to watch';
    } else if (state === 'connecting') {
      text = detail ? `Connecting… (${detail})` : 'Connecting…';
    } else {
      const seconds = Math.max(1, Math.ceil((retryAt - performance.now()) / 1000));
      const waiting = retryTimer ? seconds : 0;
      if (state === 'reconnecting') {
        text = waiting ? `Reconnecting in ${waiting} s` : 'Reconnecting…';
        if (detail) text += ` — ${detail}`;
      } else {
        text = detail || 'Error';
        if (waiting) text += ` — retrying in ${waiting} s`;
      }
    }
    if (ui.statusText.textContent !== text) ui.statusText.textContent = text;
  }

  // ---------------------------------------------------------------------------------------
  // Connection attempts

  let attempt = null; // the current one; callbacks of replaced attempts check and bail out
  let attemptCount = 0;
  let failures = 0; // consecutive, for backoff; reset once video plays

  class OfferError extends Error {
    constructor(message, status = 0, retryAfterMs = 0) {
      super(message);
      this.status = status;
      this.retryAfterMs = retryAfterMs;
    }
  }

  function closeAttempt() {
    const a = attempt;
    if (!a) return;
    attempt = null;
    if (a.gotFrame) holdLastFrame();
    clearTimeout(a.disconnectedTimer);
    a.abort.abort();
    if (a.pc) {
      if (window.robotcamSound) window.robotcamSound.detach(a.pc);
      if (window.robotcamCameras) window.robotcamCameras.detach(a.pc);
      a.pc.ontrack = null;
      a.pc.onconnectionstatechange = null;
      a.pc.oniceconnectionstatechange = null;
      try {
        a.pc.close();
      } catch (err) {
        /* already closed */
      }
    }
    robotcam.pc = null;
  }

  async function connect() {
    clearRetry();
    closeAttempt(); // never two connections at once
    if (attemptCount > 0) robotcam.reconnects += 1;
    attemptCount += 1;

    const a = {
      pc: null,
      abort: new AbortController(),
      stream: null,
      answeredAt: 0,
      gotFrame: false,
      session: null, // X-Robotcam-Session of the answer: names this viewer in later requests
      framesSeen: -1,
      lastProgressAt: 0,
      disconnectedTimer: 0,
      prev: null,
    };
    attempt = a;
    if (failures > 0) setState('reconnecting', robotcam.lastError || '');
    else setState('connecting');

    if (typeof RTCPeerConnection !== 'function') {
      fail(a, new OfferError('this browser does not support WebRTC'), true);
      return;
    }

    try {
      // The daemon's STUN/TURN servers (none on a LAN), with TURN credentials minted for us.
      const clientConfig = await loadClientConfig(a.abort.signal);
      if (attempt !== a) return;
      const pc = new RTCPeerConnection({ iceServers: clientConfig.iceServers });
      a.pc = pc;
      robotcam.pc = pc;
      a.stream = new MediaStream();
      for (const kind of RECEIVE_KINDS) pc.addTransceiver(kind, { direction: 'recvonly' });
      if (window.robotcamCameras) window.robotcamCameras.attach(pc, clientConfig);
      // Robot control (web/control.js): its data channel must exist before the offer.
      if (clientConfig.control && clientConfig.control.enabled && window.robotcamControl) {
        window.robotcamControl.attach(pc, clientConfig.control);
      }
      // Sound both ways (web/sound.js): a sendrecv audio transceiver, before the offer.
      if (window.robotcamSound) window.robotcamSound.attach(pc, clientConfig);
      pc.ontrack = (event) => {
        if (attempt !== a) return;
        if (window.robotcamCameras && window.robotcamCameras.onTrack(event)) return;
        onTrack(a, event);
      };
      pc.onconnectionstatechange = () => {
        if (attempt === a) onConnectionState(a);
      };
      pc.oniceconnectionstatechange = pc.onconnectionstatechange;

      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      await waitForIceGathering(pc, SETTINGS.iceGatheringTimeoutMs);
      if (attempt !== a) return;

      const answer = await postOffer(pc.localDescription, a.abort.signal);
      if (attempt !== a) return;
      await pc.setRemoteDescription(answer);
      if (window.robotcamSound) window.robotcamSound.connected(pc, answer.session);
      if (window.robotcamCameras) window.robotcamCameras.connected(pc, answer.session);
      a.session = answer.session;
      a.answeredAt = a.lastProgressAt = performance.now();
      watchDtls(a);
    } catch (err) {
      if (attempt === a) fail(a, err);
    }
  }

  /** GET /api/config: ICE servers and features; without it, a LAN-only setup ({iceServers: []}). */
  async function loadClientConfig(signal) {
    try {
      const response = await fetchWithTimeout('/api/config', { cache: 'no-store' }, SETTINGS.healthTimeoutMs, signal);
      if (response.status === 401) throw new OfferError('sign in first', 401);
      const body = response.ok ? await response.json() : null;
      if (body && Array.isArray(body.iceServers)) return body;
    } catch (err) {
      if (signal.aborted || err.status === 401) throw err;
    }
    return { iceServers: [] };
  }

  /** Resolves when ICE gathering completes, or after timeoutMs with what was gathered. */
  function waitForIceGathering(pc, timeoutMs) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', onState);
        pc.removeEventListener('icecandidate', onCandidate);
        resolve();
      };
      const onState = () => {
        if (pc.iceGatheringState === 'complete') done();
      };
      const onCandidate = (event) => {
        if (!event.candidate) done();
      };
      const timer = setTimeout(done, timeoutMs);
      pc.addEventListener('icegatheringstatechange', onState);
      pc.addEventListener('icecandidate', onCandidate);
    });
  }

  async function postOffer(description, signal) {
    let response;
    let body = null;
    try {
      response = await fetchWithTimeout(
        '/offer',
        {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ sdp: description.sdp, type: description.type }),
          cache: 'no-store',
        },
        SETTINGS.offerTimeoutMs,
        signal,
      );
      body = await response.json().catch(() => null);
    } catch (err) {
      if (err && err.name === 'TimeoutError') {
        throw new OfferError(`no answer from robotcam within ${SETTINGS.offerTimeoutMs / 1000} s`);
      }
      if (signal.aborted) throw err;
      throw new OfferError('robotcam is not reachable');
    }
    if (!response.ok) {
      const message = (body && typeof body.error === 'string' && body.error) || `HTTP ${response.status}`;
      throw new OfferError(message, response.status, retryAfterMs(response));
    }
    if (!body || body.type !== 'answer' || typeof body.sdp !== 'string') {
      throw new OfferError('robotcam sent an invalid answer', response.status);
    }
    // `session` names this viewer in later requests (talk-back): the X-Robotcam-Session header.
    return { type: 'answer', sdp: body.sdp, session: response.headers.get('X-Robotcam-Session') };
  }

  function retryAfterMs(response) {
    const value = response.headers.get('Retry-After');
    const seconds = value === null ? NaN : Number(value);
    return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 60) * 1000 : 0;
  }

  /** fetch() that gives up after timeoutMs (TimeoutError) or when `outer` aborts. */
  async function fetchWithTimeout(url, options, timeoutMs, outer) {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onOuterAbort = () => controller.abort();
    if (outer) {
      if (outer.aborted) controller.abort();
      else outer.addEventListener('abort', onOuterAbort);
    }
    try {
      return await fetch(url, { ...options, signal: controller.signal });
    } catch (err) {
      if (timedOut) {
        const timeout = new Error(`${url}: timed out`);
        timeout.name = 'TimeoutError';
        throw timeout;
      }
      throw err;
    } finally {
      clearTimeout(timer);
      if (outer) outer.removeEventListener('abort', onOuterAbort);
    }
  }

  /** Give up on attempt `a` and schedule the next one (unless `final`). */
  function fail(a, err, final = false) {
    if (attempt !== a) return;
    const message = (err && err.message) || String(err);
    const status = (err && err.status) || 0;
    closeAttempt();
    if (status === 401) {
      // no sign-in, or it ended (expired, signed out elsewhere, user removed): ask again
      showLogin('Your sign-in has ended: sign in again');
      return;
    }
    robotcam.lastError = message;
    if (final) {
      setState('error', message);
      return;
    }
    // A 4xx other than timeout/rate limit: this browser and this daemon disagree, and retrying
    // quickly will not change that; keep trying slowly in case the daemon is upgraded.
    const refused = status >= 400 && status < 500 && status !== 408 && status !== 429;
    failures = refused ? Math.max(failures + 1, 10) : failures + 1;
    let delay = backoffMs(failures);
    if (err && err.retryAfterMs) delay = Math.max(delay, err.retryAfterMs);
    scheduleRetry(delay);
    setState(refused ? 'error' : 'reconnecting', message);
  }

  function backoffMs(n) {
    const base = Math.min(SETTINGS.backoffMaxMs, SETTINGS.backoffInitialMs * 2 ** Math.max(0, n - 1));
    const jittered = base * (0.75 + Math.random() * 0.5); // ±25 %, so viewers spread out
    return Math.round(Math.min(SETTINGS.backoffMaxMs, Math.max(SETTINGS.backoffInitialMs / 2, jittered)));
  }

  function scheduleRetry(delayMs) {
    clearRetry();
    retryAt = performance.now() + delayMs;
    retryTimer = setTimeout(() => {
      retryTimer = 0;
      connect();
    }, delayMs);
    countdownTimer = setInterval(renderStatus, 250);
  }

  function clearRetry() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = 0;
    countdownTimer = 0;
  }

  /** Reconnect now instead of waiting out the backoff (the user is looking, or we are back online). */
  function hurryRetry() {
    if (retryTimer && robotcam.state === 'reconnecting') connect();
  }

  function onConnectionState(a) {
    const pc = a.pc;
    const state = pc.connectionState || iceToConnectionState(pc.iceConnectionState);
    if (state === 'connected') {
      clearTimeout(a.disconnectedTimer);
      a.disconnectedTimer = 0;
      updateLive(a);
    } else if (state === 'disconnected') {
      if (robotcam.state === 'live' || robotcam.state === 'poor') setState('connecting', 'connection interrupted');
      if (!a.disconnectedTimer) {
        a.disconnectedTimer = setTimeout(() => {
          a.disconnectedTimer = 0;
          const now = pc.connectionState || iceToConnectionState(pc.iceConnectionState);
          if (attempt === a && now === 'disconnected') fail(a, new Error('connection lost'));
        }, SETTINGS.disconnectedGraceMs);
      }
    } else if (state === 'failed') {
      fail(a, new Error('connection failed'));
    } else if (state === 'closed') {
      fail(a, new Error('connection closed'));
    }
  }

  // A daemon that shuts down closes its DTLS sessions; Chromium then reports the DTLS transport
  // closed at once but leaves connectionState 'connected' until ICE consent runs out. Watching
  // the transport turns a daemon restart into a reconnect within a second or so; an abrupt end
  // (kill -9, cable pulled) is still caught by connectionState and the frozen-video watchdog.
  function watchDtls(a) {
    const seen = new Set();
    for (const transceiver of a.pc.getTransceivers()) {
      const dtls = transceiver.receiver && transceiver.receiver.transport;
      if (!dtls || seen.has(dtls) || typeof dtls.addEventListener !== 'function') continue;
      seen.add(dtls);
      const check = () => {
        if (attempt !== a) return;
        if (dtls.state === 'closed') fail(a, new Error('robotcam closed the connection'));
        else if (dtls.state === 'failed') fail(a, new Error('secure connection failed'));
      };
      dtls.addEventListener('statechange', check);
      check();
    }
  }

  function iceToConnectionState(ice) {
    return { completed: 'connected', checking: 'connecting' }[ice] || ice;
  }

  function onTrack(a, event) {
    a.stream.addTrack(event.track);
    if (video.srcObject !== a.stream) video.srcObject = a.stream;
    startPlayback();
  }

  /** Keep the picture on screen (a canvas over the video) until the next connection has one. */
  function holdLastFrame() {
    const canvas = ui.lastFrame;
    const { videoWidth: width, videoHeight: height } = video;
    if (!width || !height || video.readyState < 2) return;
    try {
      canvas.width = width;
      canvas.height = height;
      canvas.getContext('2d').drawImage(video, 0, 0, width, height);
      canvas.hidden = false;
    } catch (err) {
      canvas.hidden = true;
    }
  }

  function markFrame(a) {
    if (a.gotFrame) return;
    ui.lastFrame.hidden = true;
    a.gotFrame = true;
    a.lastProgressAt = performance.now();
    updateLive(a);
  }

  function updateLive(a) {
    if (attempt !== a || !a.gotFrame || robotcam.state === 'live') return;
    const state = a.pc.connectionState || iceToConnectionState(a.pc.iceConnectionState);
    if (state !== 'connected') return;
    failures = 0;
    robotcam.lastError = null;
    setState('live');
    pollHealth(); // the footer's viewer count now includes this page
  }

  // ---------------------------------------------------------------------------------------
  // Playback

  function startPlayback() {
    // autoplay without a gesture needs muted, set as a property too (iOS); after the viewer's
    // tap on "Unmute" (web/sound.js) the page may play sound, and a reconnect keeps it
    video.muted = !(window.robotcamSound && window.robotcamSound.unmuted);
    video.defaultMuted = true;
    video.playsInline = true;
    let promise;
    try {
      promise = video.play();
    } catch (err) {
      return;
    }
    if (promise && typeof promise.then === 'function') {
      promise.then(
        () => {
          ui.playButton.hidden = true;
        },
        (err) => {
          // AbortError: a newer srcObject replaced this one; that load will play.
          if (err && err.name === 'NotAllowedError') ui.playButton.hidden = false;
        },
      );
    }
  }

  const onVideoFrame = () => {
    if (video.videoWidth > 0) video.classList.add('has-size');
    if (attempt && video.srcObject === attempt.stream && video.readyState >= 2) markFrame(attempt);
  };
  video.addEventListener('loadeddata', onVideoFrame);
  video.addEventListener('playing', onVideoFrame);
  video.addEventListener('resize', onVideoFrame);
  // iOS pauses the video when it leaves its native fullscreen player, and some browsers pause
  // it when the tab comes back; a live camera should simply keep playing.
  video.addEventListener('webkitendfullscreen', startPlayback);
  video.addEventListener('pause', () => {
    if (attempt && video.srcObject && !document.hidden) setTimeout(startPlayback, 0);
  });
  ui.playButton.addEventListener('click', startPlayback);

  // ---------------------------------------------------------------------------------------
  // Stats and the frozen-stream watchdog

  let statsBusy = false;

  async function statsTick() {
    const a = attempt;
    if (!a || !a.pc || !a.answeredAt || statsBusy) return;
    statsBusy = true;
    try {
      const report = await a.pc.getStats();
      if (attempt !== a) return;
      const summary = summarize(report, a.prev);
      a.prev = summary;
      robotcam.stats = summary;
      watchdog(a, summary);
      if (!ui.stats.hidden) {
        renderStats(summary);
        pollQuality(a);
      }
    } catch (err) {
      /* the connection was closed under us; the next attempt has its own stats */
    } finally {
      statsBusy = false;
    }
  }

  function watchdog(a, summary) {
    const now = performance.now();
    let frames = summary.framesDecoded;
    if (frames == null && typeof video.getVideoPlaybackQuality === 'function') {
      frames = video.getVideoPlaybackQuality().totalVideoFrames;
    }
    if (frames != null && frames > a.framesSeen) {
      if (frames > 0) {
        a.lastProgressAt = now;
        markFrame(a);
      }
      a.framesSeen = frames;
    }
    // A hidden tab may legitimately stop decoding; judge only what the user can see.
    if (document.hidden) {
      a.lastProgressAt = now;
      return;
    }
    // The large picture's camera fails at the robot (several cameras): starting over would not
    // bring it back, and the other cameras play on in this connection. Say so and wait.
    const cameraProblem = window.robotcamCameras && window.robotcamCameras.stageProblem();
    if (cameraProblem && a.gotFrame && now - a.lastProgressAt > SETTINGS.poorAfterMs) {
      a.lastProgressAt = now - SETTINGS.poorAfterMs;
      setState('camera', `Camera reconnecting — ${cameraProblem}`);
      return;
    }
    if (robotcam.state === 'camera' && !cameraProblem) setState('live');
    const stalled = now - a.lastProgressAt;
    // A picture that stands still is never "Live": between a short stall and giving up on the
    // connection, say the connection is poor (the robot may be at the edge of its Wi-Fi).
    if (robotcam.state === 'live' && a.gotFrame && stalled > SETTINGS.poorAfterMs) {
      setState('poor', `picture stalled for ${Math.round(stalled / 1000)} s`);
    } else if (robotcam.state === 'poor' && stalled <= SETTINGS.poorAfterMs) {
      setState('live');
    }
    if (a.gotFrame && stalled > SETTINGS.frozenTimeoutMs) {
      fail(a, new Error(`video froze (no new frame for ${Math.round(stalled / 1000)} s)`));
    } else if (!a.gotFrame && stalled > SETTINGS.firstFrameTimeoutMs) {
      fail(a, new Error(`no video within ${Math.round(stalled / 1000)} s`));
    }
  }

  /** The figures the overlay shows, from one getStats() report and the previous summary. */
  function summarize(report, prev) {
    let inbound = null;
    let transport = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'video' && !inbound) inbound = s;
      else if (s.type === 'transport' && s.selectedCandidatePairId) transport = s;
      else if (s.type === 'candidate-pair' && s.selected) pair = s; // Firefox
    });
    if (transport) pair = report.get(transport.selectedCandidatePairId) || pair;
    const codec = inbound && inbound.codecId ? report.get(inbound.codecId) : null;
    const local = pair ? report.get(pair.localCandidateId) : null;
    const remote = pair ? report.get(pair.remoteCandidateId) : null;

    const summary = {
      timestamp: inbound ? inbound.timestamp : performance.now(),
      width: (inbound && inbound.frameWidth) || video.videoWidth || 0,
      height: (inbound && inbound.frameHeight) || video.videoHeight || 0,
      framesDecoded: inbound && inbound.framesDecoded != null ? inbound.framesDecoded : null,
      framesDropped: inbound && inbound.framesDropped != null ? inbound.framesDropped : null,
      packetsLost: inbound && inbound.packetsLost != null ? inbound.packetsLost : null,
      bytesReceived: inbound ? inbound.bytesReceived || 0 : 0,
      fps: inbound && inbound.framesPerSecond != null ? inbound.framesPerSecond : null,
      bitrate: null, // bits per second
      rttMs: pair && pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
      codec: codec ? describeCodec(codec) : null,
      local: local ? describeCandidate(local) : null,
      remote: remote ? describeCandidate(remote) : null,
    };
    if (prev && summary.timestamp > prev.timestamp) {
      const seconds = (summary.timestamp - prev.timestamp) / 1000;
      if (summary.bytesReceived >= prev.bytesReceived) {
        summary.bitrate = ((summary.bytesReceived - prev.bytesReceived) * 8) / seconds;
      }
      if (summary.fps == null && summary.framesDecoded != null && prev.framesDecoded != null) {
        summary.fps = (summary.framesDecoded - prev.framesDecoded) / seconds;
      }
    }
    return summary;
  }

  function describeCodec(codec) {
    const name = (codec.mimeType || '').split('/')[1] || codec.mimeType || '?';
    const profile = /profile-level-id=([0-9a-f]{6})/i.exec(codec.sdpFmtpLine || '');
    if (name.toUpperCase() === 'H264' && profile) {
      const id = profile[1].toLowerCase();
      const known = { '42e0': 'constrained baseline', '42c0': 'constrained baseline', '4200': 'baseline', '4d00': 'main', '6400': 'high' };
      const label = known[id.slice(0, 4)];
      return label ? `H.264 ${label}` : `H.264 (${id})`;
    }
    return name;
  }

  function describeCandidate(c) {
    const address = c.address || c.ip || '?';
    return { address, port: c.port, type: c.candidateType, protocol: c.protocol };
  }

  const statCells = {
    resolution: $('stat-resolution'),
    fps: $('stat-fps'),
    bitrate: $('stat-bitrate'),
    rtt: $('stat-rtt'),
    codec: $('stat-codec'),
    loss: $('stat-loss'),
    path: $('stat-path'),
    quality: $('stat-quality'),
    link: $('stat-link'),
  };

  function renderStats(s) {
    const set = (cell, text) => {
      if (cell.textContent !== text) cell.textContent = text;
    };
    set(statCells.resolution, s.width && s.height ? `${s.width} × ${s.height}` : '–');
    set(statCells.fps, s.fps != null ? `${s.fps.toFixed(1)} fps` : '–');
    set(statCells.bitrate, s.bitrate != null ? formatBitrate(s.bitrate) : '–');
    set(statCells.rtt, s.rttMs != null ? `${s.rttMs < 10 ? s.rttMs.toFixed(1) : Math.round(s.rttMs)} ms` : '–');
    set(statCells.codec, s.codec || '–');
    const lost = s.packetsLost != null ? `${s.packetsLost} pkts` : '–';
    const dropped = s.framesDropped != null ? `${s.framesDropped} frames` : '–';
    set(statCells.loss, `${lost} / ${dropped}`);
    const end = (c) => `${c.address.includes(':') ? `[${c.address}]` : c.address}${c.port ? `:${c.port}` : ''}`;
    set(
      statCells.path,
      s.local && s.remote ? `${end(s.local)} ↔ ${end(s.remote)} (${s.local.type || '?'}/${s.remote.type || '?'})` : '–',
    );
  }

  // What the daemon says about this viewer: which rendition it sends and why, and the link it
  // estimates (GET /api/viewer), every few seconds while the overlay is open.
  let qualityAt = 0;

  async function pollQuality(a) {
    const now = performance.now();
    if (!a.session || now - qualityAt < 3000) return;
    qualityAt = now;
    try {
      const response = await fetchWithTimeout(`/api/viewer?session=${encodeURIComponent(a.session)}`,
        { cache: 'no-store' }, SETTINGS.healthTimeoutMs);
      if (!response.ok || attempt !== a) return;
      const q = await response.json();
      robotcam.quality = q;
      const full = q.rung === 0;
      statCells.quality.textContent = q.rendition
        ? `${full ? 'full' : `reduced (${q.rung} of ${q.rungs - 1})`}: ${q.rendition}${full ? '' : ` — ${q.why}`}`
        : '–';
      const l = q.link || {};
      const parts = [];
      if (l.estimate_kbps != null) parts.push(`estimate ${l.estimate_kbps} kbit/s`);
      if (l.loss_percent != null) parts.push(`loss ${l.loss_percent} %`);
      if (l.verdict) parts.push(l.verdict);
      statCells.link.textContent = parts.length ? parts.join(', ') : '–';
    } catch (err) {
      /* the overlay keeps its last figures */
    }
  }

  function formatBitrate(bps) {
    if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
    return `${Math.round(bps / 1e3)} kbit/s`;
  }

  function setStatsVisible(visible) {
    ui.stats.hidden = !visible;
    ui.statsButton.setAttribute('aria-pressed', String(visible));
    try {
      localStorage.setItem('robotcam.stats', visible ? '1' : '0');
    } catch (err) {
      /* private mode: not remembered */
    }
    if (visible && robotcam.stats) renderStats(robotcam.stats);
  }

  ui.statsButton.addEventListener('click', () => setStatsVisible(ui.stats.hidden));

  // ---------------------------------------------------------------------------------------
  // Fullscreen: the whole page where the Fullscreen API exists (the CSS then gives the picture
  // the screen and floats the buttons over it, so there is a way out on touch screens), else
  // the iOS native video player.

  const fullscreenElement = () => document.fullscreenElement || document.webkitFullscreenElement || null;

  function toggleFullscreen() {
    if (fullscreenElement()) {
      const exit = document.exitFullscreen || document.webkitExitFullscreen;
      if (exit) Promise.resolve(exit.call(document)).catch(() => {});
      return;
    }
    const root = document.documentElement;
    const request = root.requestFullscreen || root.webkitRequestFullscreen;
    if (request) {
      Promise.resolve(request.call(root, { navigationUI: 'hide' })).catch(enterVideoFullscreen);
    } else {
      enterVideoFullscreen();
    }
  }

  function enterVideoFullscreen() {
    try {
      if (typeof video.webkitEnterFullscreen === 'function') video.webkitEnterFullscreen();
    } catch (err) {
      /* no metadata yet (iOS): nothing to show fullscreen */
    }
  }

  function renderFullscreenButton() {
    const on = Boolean(fullscreenElement());
    document.body.classList.toggle('fullscreen', on);
    ui.fullscreenButton.textContent = on ? 'Exit fullscreen' : 'Fullscreen';
  }

  const canFullscreen =
    document.fullscreenEnabled || document.webkitFullscreenEnabled || typeof video.webkitEnterFullscreen === 'function';
  if (!canFullscreen) ui.fullscreenButton.hidden = true;
  ui.fullscreenButton.addEventListener('click', toggleFullscreen);
  video.addEventListener('dblclick', toggleFullscreen);
  document.addEventListener('fullscreenchange', renderFullscreenButton);
  document.addEventListener('webkitfullscreenchange', renderFullscreenButton);

  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target instanceof HTMLElement && event.target.closest('input, textarea, select')) return;
    if (event.key === 'f' || event.key === 'F') toggleFullscreen();
    else if (event.key === 's' || event.key === 'S') setStatsVisible(ui.stats.hidden);
  });

  // ---------------------------------------------------------------------------------------
  // Footer: the daemon's /health, polled only while the page is visible. Failures here are
  // shown in the footer and nowhere else: the video does not depend on them.

  let healthTimer = 0;
  let healthBusy = false;

  async function pollHealth() {
    clearTimeout(healthTimer);
    healthTimer = 0;
    if (healthBusy || document.hidden) return;
    healthBusy = true;
    try {
      const response = await fetchWithTimeout('/health', { cache: 'no-store' }, SETTINGS.healthTimeoutMs);
      const body = await response.json().catch(() => null);
      if (!body || typeof body !== 'object') throw new Error(`HTTP ${response.status}`);
      robotcam.health = body;
      renderHealth(body);
    } catch (err) {
      robotcam.health = null;
      ui.footer.dataset.health = 'unreachable';
      ui.footerText.textContent = 'robotcam · status unavailable';
    } finally {
      healthBusy = false;
      if (!document.hidden && !healthTimer) healthTimer = setTimeout(pollHealth, SETTINGS.healthIntervalMs);
    }
  }

  function renderHealth(h) {
    const parts = [`robotcam ${h.version || ''}`.trim()];
    const v = h.video || {};
    if (v.source) {
      let source = String(v.source);
      if (v.width && v.height) source += ` ${v.width}×${v.height}`;
      if (typeof v.fps_measured === 'number') source += ` @ ${v.fps_measured.toFixed(0)} fps`;
      parts.push(source);
    }
    const p = h.peers || {};
    if (typeof p.count === 'number') {
      parts.push(`${p.count}${p.max ? `/${p.max}` : ''} viewer${p.count === 1 ? '' : 's'}`);
    }
    if (h.status && h.status !== 'ok') {
      const reason = v.reason ? `: ${v.reason}` : '';
      parts.push(`${h.status}${reason}`);
    }
    ui.footer.dataset.health = h.status || 'ok';
    ui.footerText.textContent = parts.join(' · ');
  }

  // ---------------------------------------------------------------------------------------
  // Signing in and out (README "Security")

  const account = robotcam.account;
  const mayWatch = () => account.permissions.includes('view');

  /** GET /api/session: who this page is. False when it may not watch (the form is needed). */
  async function checkSession() {
    try {
      const response = await fetchWithTimeout('/api/session', { cache: 'no-store' }, SETTINGS.healthTimeoutMs);
      const body = await response.json().catch(() => null);
      if (!response.ok || !body) return response.status !== 401;
      account.auth = Boolean(body.auth);
      account.user = body.user || null;
      account.permissions = Array.isArray(body.permissions) ? body.permissions : [];
    } catch (err) {
      return true; // unreachable: connect() shows that, and retries
    } finally {
      renderAccount();
    }
    return mayWatch();
  }

  function renderAccount() {
    ui.signoutButton.hidden = !account.user;
    ui.signoutButton.title = account.user ? `Signed in as ${account.user.name}` : '';
    // an open kiosk (anonymous view) can still sign in for more (talk, drive)
    ui.signinButton.hidden = !(account.auth && !account.user && ui.login.hidden);
  }

  function showLogin(detail = '') {
    clearRetry();
    closeAttempt();
    account.user = null;
    ui.login.hidden = false;
    ui.loginError.hidden = !detail;
    ui.loginError.textContent = detail;
    setState('signed-out', 'Sign in to watch');
    renderAccount();
    (ui.loginUser.value ? ui.loginPassword : ui.loginUser).focus();
  }

  async function start() {
    if (await checkSession()) connect();
    else showLogin();
  }

  function loginError(message) {
    ui.loginError.textContent = message;
    ui.loginError.hidden = !message;
  }

  ui.login.addEventListener('submit', async (event) => {
    event.preventDefault();
    ui.loginSubmit.disabled = true;
    loginError('');
    try {
      const response = await fetchWithTimeout(
        '/api/login',
        {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ username: ui.loginUser.value.trim(), password: ui.loginPassword.value }),
          cache: 'no-store',
        },
        SETTINGS.offerTimeoutMs,
      );
      const body = await response.json().catch(() => null);
      if (response.ok) {
        ui.loginPassword.value = '';
        ui.login.hidden = true;
        await checkSession();
        connect();
        return;
      }
      if (response.status === 401) loginError('Wrong user name or password');
      else if (response.status === 429) {
        const seconds = Math.ceil(retryAfterMs(response) / 1000) || 30;
        loginError(`Too many attempts: try again in ${seconds} s`);
      } else loginError((body && body.error) || `HTTP ${response.status}`);
    } catch (err) {
      loginError('robotcam is not reachable');
    } finally {
      ui.loginSubmit.disabled = false;
    }
  });

  ui.signinButton.addEventListener('click', () => {
    ui.login.hidden = false;
    renderAccount();
    ui.loginUser.focus();
  });

  ui.signoutButton.addEventListener('click', async () => {
    clearRetry();
    closeAttempt();
    try {
      await fetchWithTimeout('/api/logout', { method: 'POST', cache: 'no-store' }, SETTINGS.healthTimeoutMs);
    } catch (err) {
      /* the cookie stays until it expires; the daemon ends it then */
    }
    account.user = null;
    if (await checkSession()) connect();
    else showLogin();
  });

  // ---------------------------------------------------------------------------------------
  // Page lifecycle

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      clearTimeout(healthTimer);
      healthTimer = 0;
      return;
    }
    if (attempt) attempt.lastProgressAt = performance.now(); // a fresh grace period
    pollHealth();
    hurryRetry();
    if (attempt && video.paused && video.srcObject) startPlayback();
  });
  window.addEventListener('online', hurryRetry);
  // Free the daemon's viewer slot right away when the tab goes (or enters the back/forward cache).
  window.addEventListener('pagehide', () => {
    clearRetry();
    closeAttempt();
  });
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) start();
  });

  try {
    if (localStorage.getItem('robotcam.stats') === '1') setStatsVisible(true);
  } catch (err) {
    /* no storage */
  }
  setInterval(statsTick, SETTINGS.statsIntervalMs);
  start();
  pollHealth();
})();
