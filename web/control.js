/*
 * robotcam robot control: a `control` data channel on the viewer's connection, driven by the
 * arrow keys / WASD (desktop) or an on-screen pad (touch or mouse), and the robot program's
 * latest telemetry, shown small over the picture.
 *
 * app.js calls window.robotcamControl.attach(pc, config) before its offer when /api/config
 * says control is enabled; nothing shows otherwise. While a key or the pad is held the page
 * sends {"type": "drive", "linear": -1..1, "angular": -1..1} at once and then every 100 ms, and
 * one with both 0 on release, blur or when the tab hides. linear > 0 is forward, angular > 0
 * turns left (counter-clockwise, as ROS's Twist).
 *
 * Test hooks: window.robotcamControl = { state, sent, lastSent, telemetry, lastError }.
 */
'use strict';

(() => {
  const REPEAT_MS = 100;
  const KEYS = {
    ArrowUp: 'up', KeyW: 'up', ArrowDown: 'down', KeyS: 'down',
    ArrowLeft: 'left', KeyA: 'left', ArrowRight: 'right', KeyD: 'right',
  };

  const control = {
    state: 'off', // 'off' | 'connecting' | 'open' | 'closed'
    sent: 0,
    lastSent: null,
    telemetry: null, // the latest message from the robot program
    lastError: null,
    attach,
  };
  window.robotcamControl = control;

  let channel = null;
  let maxBytes = 4096;
  const held = new Set(); // 'up' | 'down' | 'left' | 'right' from the keyboard
  let padVector = null; // {linear, angular} while the pad is held
  let repeatTimer = 0;
  let moving = false; // the last command sent was not a stop

  // --- markup (injected, so index.html only loads this file) --------------------------------

  const ui = {};

  function build() {
    if (ui.root) return;
    const css = document.createElement('link');
    css.rel = 'stylesheet';
    css.href = '/static/control.css';
    document.head.appendChild(css);

    const stage = document.getElementById('stage') || document.body;
    ui.root = document.createElement('section');
    ui.root.className = 'robot-control';
    ui.root.setAttribute('aria-label', 'Robot control');
    ui.root.hidden = true;
    ui.root.innerHTML = `
      <div id="drive-pad" class="drive-pad" role="application"
           aria-label="Drive: hold and drag; arrow keys or WASD on a keyboard">
        <div class="drive-knob"></div>
      </div>
      <div class="control-info">
        <p id="control-note" class="control-note" aria-live="polite"></p>
        <pre id="control-telemetry" class="control-telemetry" hidden></pre>
      </div>`;
    stage.appendChild(ui.root);
    ui.pad = ui.root.querySelector('#drive-pad');
    ui.knob = ui.root.querySelector('.drive-knob');
    ui.note = ui.root.querySelector('#control-note');
    ui.telemetry = ui.root.querySelector('#control-telemetry');
    const touch = window.matchMedia && window.matchMedia('(pointer: coarse)').matches;
    ui.note.textContent = touch ? 'Drive: hold and drag the pad' : 'Drive: arrow keys / WASD or the pad';

    ui.pad.addEventListener('pointerdown', onPadDown);
    ui.pad.addEventListener('pointermove', onPadMove);
    ui.pad.addEventListener('pointerup', onPadUp);
    ui.pad.addEventListener('pointercancel', onPadUp);
    ui.pad.addEventListener('lostpointercapture', onPadUp);
  }

  // --- the channel --------------------------------------------------------------------------

  /** Open the control channel on a new connection (before its offer). */
  function attach(pc, config = {}) {
    build();
    releaseAll(false);
    if (channel) channel.onopen = channel.onclose = channel.onmessage = null;
    if (typeof config.max_message_bytes === 'number') maxBytes = config.max_message_bytes;
    const ch = pc.createDataChannel(config.label || 'control', { ordered: true });
    channel = ch;
    setState('connecting');
    ch.onopen = () => {
      if (channel === ch) setState('open');
    };
    ch.onclose = () => {
      if (channel !== ch) return;
      releaseAll(false);
      setState('closed');
    };
    ch.onmessage = (event) => {
      if (channel === ch) onMessage(event.data);
    };
    return ch;
  }

  function setState(state) {
    control.state = state;
    if (ui.root) {
      ui.root.hidden = state !== 'open';
      ui.root.dataset.state = state;
    }
  }

  function onMessage(data) {
    let message;
    try {
      message = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data));
    } catch (err) {
      return;
    }
    if (!message || typeof message !== 'object') return;
    if (message.type === 'error') {
      control.lastError = String(message.error || 'error');
      ui.note.textContent = control.lastError;
      ui.note.classList.add('is-error');
      return;
    }
    control.telemetry = message;
    ui.note.classList.remove('is-error');
    const text = JSON.stringify(message, null, 2);
    ui.telemetry.textContent = text.length > 2000 ? `${text.slice(0, 2000)}\n…` : text;
    ui.telemetry.hidden = false;
  }

  function send(message) {
    if (!channel || channel.readyState !== 'open') return false;
    const text = JSON.stringify(message);
    if (text.length > maxBytes) return false;
    try {
      channel.send(text);
    } catch (err) {
      return false;
    }
    control.sent += 1;
    control.lastSent = message;
    return true;
  }

  // --- driving ------------------------------------------------------------------------------

  const round = (x) => Math.round(Math.max(-1, Math.min(1, x)) * 100) / 100 || 0;

  function command() {
    if (padVector) return padVector;
    const linear = (held.has('up') ? 1 : 0) - (held.has('down') ? 1 : 0);
    const angular = (held.has('left') ? 1 : 0) - (held.has('right') ? 1 : 0);
    return { linear, angular };
  }

  /** Send the current command now, then repeat it while something is held; stop once after. */
  function update() {
    const { linear, angular } = command();
    const active = held.size > 0 || padVector !== null;
    if (active) {
      send({ type: 'drive', linear: round(linear), angular: round(angular) });
      moving = true;
      if (!repeatTimer) repeatTimer = setInterval(update, REPEAT_MS);
    } else {
      clearInterval(repeatTimer);
      repeatTimer = 0;
      if (moving) send({ type: 'drive', linear: 0, angular: 0 });
      moving = false;
    }
    renderKnob();
  }

  function releaseAll(sendStop = true) {
    held.clear();
    padVector = null;
    if (sendStop) {
      update();
    } else {
      clearInterval(repeatTimer);
      repeatTimer = 0;
      moving = false;
      renderKnob();
    }
  }

  function typing(event) {
    const t = event.target;
    return t instanceof HTMLElement && (t.isContentEditable || t.closest('input, textarea, select'));
  }

  // Capture phase on window: these keys drive, and do not also reach app.js's shortcuts
  // (S toggles the stats there) or scroll the page.
  window.addEventListener('keydown', (event) => {
    const direction = KEYS[event.code];
    if (!direction || control.state !== 'open' || event.ctrlKey || event.metaKey || event.altKey || typing(event)) return;
    event.preventDefault();
    event.stopPropagation();
    if (event.repeat || held.has(direction)) return;
    held.add(direction);
    update();
  }, true);

  window.addEventListener('keyup', (event) => {
    const direction = KEYS[event.code];
    if (!direction || !held.has(direction)) return;
    event.preventDefault();
    event.stopPropagation();
    held.delete(direction);
    update();
  }, true);

  window.addEventListener('blur', () => releaseAll());
  window.addEventListener('pagehide', () => releaseAll());
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) releaseAll();
  });

  // --- the on-screen pad: the knob's offset from the centre, as a fraction of the radius ----

  function padPoint(event) {
    const box = ui.pad.getBoundingClientRect();
    const radius = box.width / 2 || 1;
    let x = (event.clientX - (box.left + radius)) / radius;
    let y = (event.clientY - (box.top + box.height / 2)) / radius;
    const length = Math.hypot(x, y);
    if (length > 1) {
      x /= length;
      y /= length;
    }
    return { linear: round(-y), angular: round(-x) };
  }

  function onPadDown(event) {
    if (control.state !== 'open') return;
    event.preventDefault();
    try {
      ui.pad.setPointerCapture(event.pointerId);
    } catch (err) {
      /* synthetic pointer: no capture needed */
    }
    padVector = padPoint(event);
    update();
  }

  function onPadMove(event) {
    if (padVector === null) return;
    event.preventDefault();
    padVector = padPoint(event);
    update();
  }

  function onPadUp() {
    if (padVector === null) return;
    padVector = null;
    update();
  }

  function renderKnob() {
    if (!ui.knob) return;
    const { linear, angular } = command();
    const active = held.size > 0 || padVector !== null;
    ui.pad.classList.toggle('is-active', active);
    ui.knob.style.transform = `translate(${-angular * 75}%, ${-linear * 75}%)`;
  }
})();
