/*
 * robotcam sound (web/sound.js): the robot's sound with the picture, and the viewer's voice on
 * the robot's speaker.
 *
 * app.js calls window.robotcamSound.attach(pc, config) before its offer (config: GET
 * /api/config), connected(pc, key) once the answer is applied (key: the answer's
 * X-Robotcam-Session header) and detach(pc) when it drops that connection; its
 * startPlayback() keeps the <video> muted until .unmuted is true.
 *
 * - Sound starts muted: browsers only autoplay muted media. One tap on "Unmute" unmutes the
 *   <video> element, which plays the picture and the sound from one MediaStream, so they stay
 *   in sync. The same tap creates the AudioContext behind the level meter (an AnalyserNode
 *   on the received sound; browsers only start an AudioContext from a gesture).
 * - "Hold to talk": the offer already carries a sendrecv audio transceiver with no track, so
 *   talking needs no renegotiation. Pressing asks the daemon for the line (POST /api/talk),
 *   gets the microphone the first time (getUserMedia) and attaches it (replaceTrack);
 *   letting go (pointerup/cancel, the page hiding) detaches it and frees the line. Everyone
 *   sees "Line busy" live from the `talk` event of /api/events.
 * - Browsers give the microphone only to secure pages: on plain HTTP (other than localhost)
 *   the button is replaced by a link to how to turn HTTPS on.
 *
 * Test hooks: window.robotcamSound = { unmuted, level, talkState, lineBusy, you, session,
 * lastError, sent }.
 */
'use strict';

(() => {
  const MIC_KEEP_MS = 30000; // the microphone stays open this long after a talk, for the next
  const TALK_TIMEOUT_MS = 8000;
  const NOTICE_MS = 6000;
  const MIC_CONSTRAINTS = { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true }, video: false };

  const sound = {
    unmuted: false,
    level: 0, // 0..1, the incoming sound's level (after unmute)
    talkState: 'off', // 'off' | 'unavailable' | 'insecure' | 'idle' | 'requesting' | 'talking' | 'busy'
    lineBusy: false, // someone else holds the line
    you: false, // the daemon says this page holds the line
    session: null,
    lastError: null,
    sent: 0, // talks that reached the robot
    attach,
    connected,
    detach,
  };
  window.robotcamSound = sound;

  const video = document.getElementById('video');
  let config = { audio: null, talkback: null };
  let pc = null;
  let transceiver = null;
  let events = null;
  let holding = false;
  let talking = false;
  let micStream = null;
  let micTimer = 0;
  let audioContext = null;
  let analyser = null;
  let analysedTrack = null;
  let meterFrame = 0;
  let notice = '';
  let noticeTimer = 0;
  let heldBy = 'pointer'; // 'pointer' | 'key': a key held while the window loses focus never comes up

  // --- markup (injected, so index.html only loads this file) --------------------------------

  const ui = {};

  function build() {
    if (ui.root) return;
    const css = document.createElement('link');
    css.rel = 'stylesheet';
    css.href = '/static/sound.css';
    document.head.appendChild(css);

    ui.root = document.createElement('div');
    ui.root.className = 'sound-controls';
    ui.root.innerHTML = `
      <button id="unmute-button" class="control" type="button" aria-pressed="false" hidden
              title="Hear the robot (sound starts muted)">Unmute</button>
      <span id="sound-meter" class="sound-meter" role="meter" aria-label="Robot's sound level"
            aria-valuemin="0" aria-valuemax="100" aria-valuenow="0" hidden><span></span></span>
      <button id="talk-button" class="control talk-button" type="button" hidden
              title="Hold to talk through the robot's speaker">Hold to talk</button>
      <a id="talk-https" class="control talk-https" href="/help/https" target="_blank" rel="noopener" hidden
         title="Browsers give the microphone only to secure (HTTPS) pages">Talking needs HTTPS</a>`;
    const nav = document.querySelector('.controls');
    if (nav) nav.insertBefore(ui.root, nav.firstChild);
    else document.body.appendChild(ui.root);
    ui.status = document.createElement('div');
    ui.status.id = 'talk-status';
    ui.status.className = 'talk-status';
    ui.status.setAttribute('role', 'status');
    ui.status.setAttribute('aria-live', 'polite');
    ui.status.hidden = true;
    (document.getElementById('stage') || document.body).appendChild(ui.status);
    ui.unmute = ui.root.querySelector('#unmute-button');
    ui.meter = ui.root.querySelector('#sound-meter');
    ui.meterBar = ui.meter.firstElementChild;
    ui.talk = ui.root.querySelector('#talk-button');
    ui.https = ui.root.querySelector('#talk-https');

    ui.unmute.addEventListener('click', toggleMute);
    ui.talk.addEventListener('pointerdown', onPress);
    for (const type of ['pointerup', 'pointercancel', 'pointerleave', 'lostpointercapture']) {
      ui.talk.addEventListener(type, onRelease);
    }
    ui.talk.addEventListener('contextmenu', (event) => event.preventDefault()); // long press on phones
    ui.talk.addEventListener('keydown', (event) => {
      if ((event.key === ' ' || event.key === 'Enter') && !event.repeat) {
        event.preventDefault();
        press('key');
      }
    });
    ui.talk.addEventListener('keyup', (event) => {
      if (event.key === ' ' || event.key === 'Enter') release();
    });
    ui.talk.addEventListener('click', (event) => event.preventDefault());
  }

  // --- the connection's life (called by app.js) ----------------------------------------------

  function attach(newPc, clientConfig) {
    build();
    config = { audio: clientConfig.audio || null, talkback: clientConfig.talkback || null };
    pc = newPc;
    transceiver = null;
    const hear = Boolean(config.audio && config.audio.available);
    const speak = Boolean(config.talkback && config.talkback.available);
    if (hear || speak || (config.talkback && config.talkback.enabled !== false)) {
      // sendrecv with no track: the microphone is attached later without renegotiating
      transceiver = pc.addTransceiver('audio', { direction: 'sendrecv' });
    }
    render();
  }

  function connected(connectedPc, key) {
    if (connectedPc !== pc) return;
    sound.session = key || null;
    openEvents();
    if (sound.unmuted) analyse();
    render();
  }

  function detach(oldPc) {
    if (oldPc !== pc) return;
    if (talking || holding) stopTalking(false);
    if (events) events.close();
    events = null;
    pc = null;
    transceiver = null;
    sound.session = null;
    sound.you = false;
    sound.lineBusy = false;
    render();
  }

  // --- live line state: /api/events ---------------------------------------------------------

  function openEvents() {
    if (events) events.close();
    events = null;
    if (!sound.session || typeof EventSource !== 'function') return;
    events = new EventSource(`/api/events?session=${encodeURIComponent(sound.session)}`);
    events.addEventListener('talk', (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      sound.you = Boolean(data.you);
      sound.lineBusy = Boolean(data.busy) && !data.you;
      if (config.talkback) {
        // the line's state is everyone's; whether this user may talk is theirs alone
        config.talkback.available = Boolean(data.available) && config.talkback.permitted !== false;
        config.talkback.reason = data.reason || null;
      }
      if (talking && !data.you) {
        // The daemon took the line back: the time limit, or it restarted.
        stopTalking(false);
        const limit = config.talkback && config.talkback.max_seconds;
        showNotice(limit ? `The line was released after ${limit} s: hold again to go on` : 'The line was released');
      }
      render();
    });
  }

  // --- sound: unmute and the level meter ----------------------------------------------------

  function toggleMute() {
    if (sound.unmuted) {
      sound.unmuted = false;
      video.muted = true;
      stopMeter();
    } else {
      sound.unmuted = true;
      video.muted = false;
      video.volume = 1;
      const playing = video.play();
      if (playing && typeof playing.catch === 'function') playing.catch(() => {});
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!audioContext && Context) {
        try {
          audioContext = new Context(); // in the tap: browsers start it only from a gesture
        } catch (err) {
          audioContext = null;
        }
      }
      if (audioContext && audioContext.state === 'suspended') audioContext.resume().catch(() => {});
      analyse();
    }
    render();
  }

  function currentAudioTrack() {
    const stream = video.srcObject;
    if (!stream || typeof stream.getAudioTracks !== 'function') return null;
    return stream.getAudioTracks().find((t) => t.readyState === 'live') || null;
  }

  function analyse() {
    const track = currentAudioTrack();
    if (!audioContext || !track) return;
    if (track !== analysedTrack) {
      analysedTrack = track;
      analyser = audioContext.createAnalyser();
      analyser.fftSize = 1024;
      // Not connected to the output: the <video> element plays the sound; this only measures.
      audioContext.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    }
    if (!meterFrame) meterFrame = requestAnimationFrame(meter);
  }

  const samples = new Float32Array(1024);

  function meter() {
    meterFrame = 0;
    if (!sound.unmuted || !analyser) return;
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (let i = 0; i < samples.length; i += 1) sum += samples[i] * samples[i];
    const rms = Math.sqrt(sum / samples.length);
    const db = rms > 0 ? 20 * Math.log10(rms) : -100;
    sound.level = Math.max(0, Math.min(1, (db + 60) / 60)); // -60 dBFS .. 0 dBFS
    ui.meterBar.style.transform = `scaleX(${sound.level.toFixed(3)})`;
    ui.meter.setAttribute('aria-valuenow', String(Math.round(sound.level * 100)));
    if (currentAudioTrack() !== analysedTrack) analyse();
    meterFrame = requestAnimationFrame(meter);
  }

  function stopMeter() {
    if (meterFrame) cancelAnimationFrame(meterFrame);
    meterFrame = 0;
    sound.level = 0;
    if (ui.meterBar) ui.meterBar.style.transform = 'scaleX(0)';
  }

  // --- talk: hold to talk -------------------------------------------------------------------

  function talkAvailable() {
    return Boolean(config.talkback && config.talkback.available && transceiver);
  }

  function onPress(event) {
    if (event.button !== undefined && event.button !== 0) return;
    event.preventDefault();
    try {
      ui.talk.setPointerCapture(event.pointerId); // the release arrives even off the button
    } catch (err) {
      /* not capturable: pointerup on the button still releases */
    }
    press();
  }

  function onRelease() {
    release();
  }

  async function press(by = 'pointer') {
    if (holding || talking) return;
    if (!talkAvailable()) {
      showNotice((config.talkback && config.talkback.reason) || 'Talking is not available');
      render();
      return;
    }
    if (sound.lineBusy) {
      showNotice('Line busy: someone else is talking');
      render();
      return;
    }
    holding = true;
    heldBy = by;
    showNotice('');
    sound.lastError = null;
    render();
    const sender = transceiver && transceiver.sender;
    let granted = false;
    try {
      const track = await microphone();
      if (!holding) return;
      await postTalk('start');
      granted = true;
      if (!holding || !sender) {
        postTalk('stop').catch(() => {});
        return;
      }
      await sender.replaceTrack(track);
      talking = true;
      sound.sent += 1;
    } catch (err) {
      if (granted) postTalk('stop').catch(() => {});
      holding = false;
      sound.lastError = (err && err.message) || String(err);
      showNotice(sound.lastError);
    } finally {
      render();
    }
  }

  function showNotice(text) {
    notice = text;
    clearTimeout(noticeTimer);
    if (text) {
      noticeTimer = setTimeout(() => {
        notice = '';
        render();
      }, NOTICE_MS);
    }
  }

  function release() {
    if (!holding && !talking) return;
    stopTalking(true);
    render();
  }

  /** Detach the microphone and, when `tellDaemon`, free the line. */
  function stopTalking(tellDaemon) {
    const wasTalking = talking;
    holding = false;
    talking = false;
    const sender = transceiver && transceiver.sender;
    if (sender && sender.track) sender.replaceTrack(null).catch(() => {});
    if (tellDaemon && wasTalking) postTalk('stop', true).catch(() => {});
    clearTimeout(micTimer);
    micTimer = setTimeout(closeMicrophone, MIC_KEEP_MS);
  }

  async function microphone() {
    clearTimeout(micTimer);
    const live = micStream && micStream.getAudioTracks().find((t) => t.readyState === 'live');
    if (live) return live;
    if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== 'function') {
      throw new Error('This browser gives no microphone to this page (it needs HTTPS)');
    }
    try {
      micStream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
    } catch (err) {
      if (err && (err.name === 'NotAllowedError' || err.name === 'SecurityError')) {
        throw new Error('Microphone blocked: allow it for this site in the browser settings');
      }
      if (err && err.name === 'NotFoundError') throw new Error('No microphone found on this device');
      throw new Error(`Microphone: ${(err && err.message) || err}`);
    }
    return micStream.getAudioTracks()[0];
  }

  function closeMicrophone() {
    if (talking || holding || !micStream) return;
    for (const track of micStream.getTracks()) track.stop(); // the browser's mic indicator goes off
    micStream = null;
  }

  async function postTalk(action, keepalive = false) {
    if (!sound.session) throw new Error('Not connected yet');
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TALK_TIMEOUT_MS);
    let response;
    try {
      response = await fetch('/api/talk', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ session: sound.session, action }),
        cache: 'no-store',
        keepalive,
        signal: controller.signal,
      });
    } catch (err) {
      throw new Error('The robot did not answer');
    } finally {
      clearTimeout(timer);
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      if (response.status === 409) throw new Error('Line busy: someone else is talking');
      throw new Error((body && body.error) || `HTTP ${response.status}`);
    }
    return body;
  }

  // --- rendering ----------------------------------------------------------------------------

  function render() {
    if (!ui.root) return;
    const hear = Boolean(config.audio && config.audio.available && pc);
    ui.unmute.hidden = !hear;
    ui.meter.hidden = !hear || !sound.unmuted;
    ui.unmute.textContent = sound.unmuted ? 'Mute' : 'Unmute';
    ui.unmute.setAttribute('aria-pressed', String(sound.unmuted));

    // talkback.enabled: false is the owner's choice, and a user without the 'talk' permission
    // may not: no button at all. A robot without a speaker shows it disabled, and a tap says why.
    const offered = Boolean(
      pc && config.talkback && config.talkback.enabled !== false && config.talkback.permitted !== false,
    );
    const secure = window.isSecureContext !== false;
    ui.https.hidden = !offered || secure;
    ui.talk.hidden = !offered || !secure;
    if (!offered) sound.talkState = 'off';
    else if (!secure) sound.talkState = 'insecure';
    else if (!talkAvailable()) sound.talkState = 'unavailable';
    else if (talking) sound.talkState = 'talking';
    else if (holding) sound.talkState = 'requesting';
    else if (sound.lineBusy) sound.talkState = 'busy';
    else sound.talkState = 'idle';
    ui.talk.dataset.state = sound.talkState;
    ui.talk.setAttribute('aria-disabled', String(sound.talkState === 'unavailable' || sound.talkState === 'busy'));
    ui.talk.setAttribute('aria-pressed', String(holding || talking));
    ui.talk.textContent = {
      talking: 'Talking…',
      requesting: 'Wait…',
      busy: 'Line busy',
      unavailable: 'Talk unavailable',
    }[sound.talkState] || 'Hold to talk';
    if (sound.talkState === 'unavailable' && config.talkback && config.talkback.reason) {
      ui.talk.title = config.talkback.reason;
    }

    let text = notice;
    if (sound.talkState === 'talking') text = 'Talking: the robot hears you. Let go to stop.';
    else if (sound.talkState === 'busy') text = 'Line busy: someone else is talking';
    ui.status.textContent = text;
    ui.status.hidden = !text;
  }

  // --- page lifecycle -----------------------------------------------------------------------

  window.addEventListener('blur', () => {
    if (heldBy === 'key') release();
  });
  window.addEventListener('pagehide', () => release());
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) release();
  });
})();
