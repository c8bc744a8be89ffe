// talkgs live: one WebRTC connection per session. Our audio (microphone or a decoded file)
// goes up; the head's video and the same audio, delayed to match it, come back in one stream.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token") || "";
// State for the page and for anyone inspecting it (tests, the console).
const T = (window.talkgs = {
  state: "idle", session: null, pc: null, stats: null, messages: [], shown: 0, fps: 0,
  firstFrame: null, hello: null, worker: null, reconnects: 0,
});

function say(msg, ok = false) {
  $("message").textContent = msg;
  $("message").className = ok ? "ok" : "";
  T.messages.push({ t: performance.now(), ok, msg });
}

function setState(s) {
  T.state = s;
  $("st-conn").textContent = s;
  const live = s !== "idle" && s !== "closed" && s !== "failed";
  $("stop").disabled = !live;
}

async function api(path, body) {
  const opts = { headers: { "X-Talkgs-Token": token } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error((data && data.error) || `the server answered ${r.status}`);
  return data;
}

async function loadHeads() {
  try {
    const { heads } = await api("/api/heads");
    const sel = $("head");
    sel.innerHTML = "";
    for (const h of heads) {
      const o = document.createElement("option");
      o.value = h.name;
      o.textContent = `${h.name} (${h.width}x${h.height}, ${h.audio_kind})`;
      sel.appendChild(o);
    }
    for (const id of ["head", "mic", "file"]) $(id).disabled = heads.length === 0;
    T.heads = heads;
    say(heads.length ? "Pick a head, then speak or play a file." : "This server has no heads.", true);
  } catch (e) {
    say(e.message);
  }
}

let cleanup = null; // stops what feeds the current session (microphone, file player)
let statsTimer = null;
// Each microphone or file the user picks gets a new number; events of an earlier pick (its
// file ending, its decoding finishing late) are ignored.
let pick = 0;

const FIGURES = ["st-fps", "st-lat", "st-ahead", "st-first", "st-drop", "st-server"];

function resetFigures() {
  for (const id of FIGURES) $(id).textContent = "-";
  T.fps = 0; T.shown = 0; T.stats = null; T.hello = null; T.firstFrame = null; T.browserDelayMs = null;
  T.worker = null;
}

// Each session the user starts or stops gets a new number; a reconnection in flight for an
// earlier one gives up.
let feed = 0;

async function stop(reason) {
  feed += 1;
  if (statsTimer) { clearInterval(statsTimer); statsTimer = null; }
  if (cleanup) { try { cleanup(); } catch (e) { /* already stopped */ } cleanup = null; }
  const pc = T.pc, sid = T.session;
  T.pc = null; T.session = null;
  if (pc) {
    if (sid) api("/api/close", { session: sid }).catch(() => {});
    pc.close();
    setState("closed");
  }
  resetFigures();
  if (reason) say(reason);
}

function waitIce(pc) {
  // The server takes one offer with all candidates (no trickle).
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);
  });
}

function onServerMessage(m) {
  if (m.type === "hello") {
    T.hello = m;
    T.worker = m.worker || null;
    $("st-ahead").textContent = `${m.lookahead_ms.toFixed(1)} ms (lip motion needs this much audio ahead)`;
  } else if (m.type === "first_frame") {
    T.firstFrame = m;
    $("st-first").textContent = `${m.ms_after_first_audio.toFixed(0)} ms after the first audio`;
  } else if (m.type === "stats") {
    T.stats = m;
    const tot = m.latency_ms.total;
    if (tot) {
      $("st-lat").textContent = `server ${tot.p50.toFixed(0)} / ${tot.p95.toFixed(0)} ms (p50 / p95)` +
        (T.browserDelayMs != null ? ` + browser ${T.browserDelayMs.toFixed(0)} ms` : "");
    }
    const c = m.counts;
    $("st-drop").textContent = `${(c.dropped || 0) + (c.skipped || 0)} frames`;
    $("st-server").textContent = (m.worker ? `worker ${m.worker}: ` : "") +
      `${m.live_sessions} session(s), batch ${m.server.mean_batch.toFixed(1)}, ` +
      `device ${(100 * m.server.device_busy).toFixed(0)} % busy`;
  } else if (m.type === "error") {
    say(m.message);
  }
}

async function pollStats() {
  if (!T.pc) return;
  const rep = await T.pc.getStats();
  rep.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
      T.browserDelayMs = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
    }
  });
}

function countFrames(video, pc) {
  // Frames actually shown, counted per second.
  let n = 0, t0 = performance.now();
  const tick = () => {
    if (T.pc !== pc) return;
    n += 1; T.shown += 1;
    const now = performance.now();
    if (now - t0 >= 1000) {
      T.fps = (1000 * n) / (now - t0); n = 0; t0 = now;
      $("st-fps").textContent = `${T.fps.toFixed(1)} frames/s shown`;
    }
    video.requestVideoFrameCallback(tick);
  };
  if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(tick);
}

async function start(track, onConnected, stopFeed, hearIt) {
  await stop();
  cleanup = stopFeed;
  T.reconnects = 0;
  await connect(track, onConnected, hearIt);
}

// One connection of the session: our track up, the head back. A reconnection (the worker that
// served the session died) runs this again with the same track, whose feed never stopped.
// Returns whether the connection was made; a retry (reconnect) leaves failures to its caller.
async function connect(track, onConnected, hearIt, retry = false) {
  const head = $("head").value;
  const pc = new RTCPeerConnection({ iceServers: [] });
  T.pc = pc;
  setState("connecting");
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTrack(track, new MediaStream([track]));
  const dc = pc.createDataChannel("talkgs");
  dc.onmessage = (e) => {
    if (T.pc !== pc) return; // a message of a session already stopped
    try { onServerMessage(JSON.parse(e.data)); } catch (err) { /* ignore */ }
  };
  const video = $("video");
  video.muted = !hearIt;
  pc.ontrack = (e) => {
    // Video and sound share one stream, so the browser plays them in sync.
    const stream = e.streams[0] || new MediaStream([e.track]);
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      video.play().catch(() => {});
    }
  };
  pc.onconnectionstatechange = () => {
    if (T.pc !== pc) return;
    setState(pc.connectionState);
    if (pc.connectionState === "connected") {
      if (onConnected) onConnected();
      countFrames(video, pc);
    } else if (pc.connectionState === "failed") {
      stop("The connection to the server was lost.");
    }
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await waitIce(pc);
    const ans = await api("/api/offer", { sdp: pc.localDescription.sdp, type: "offer", head });
    if (T.pc !== pc) return false;
    T.session = ans.session;
    await pc.setRemoteDescription({ type: ans.type, sdp: ans.sdp });
    if (!statsTimer) statsTimer = setInterval(pollStats, 500);
    watch(pc, ans.session, track, hearIt);
    return true;
  } catch (e) {
    if (T.pc !== pc) return false;
    if (retry) { pc.close(); return false; }
    await stop();
    setState("idle");
    say(e.message);
    return false;
  }
}

// Ask the server, one long poll at a time, whether the session still lives; when its worker is
// lost, connect again (the server places it on another worker).
async function watch(pc, sid, track, hearIt) {
  while (T.pc === pc) {
    let r;
    try {
      r = await api("/api/watch", { session: sid });
    } catch (e) {
      await new Promise((ok) => setTimeout(ok, 1000));
      continue;
    }
    if (T.pc !== pc) return;
    if (r.state === "closed") return;
    if (r.state === "lost") {
      const mine = feed;
      say(r.reason || "The server lost this session; reconnecting.");
      pc.close();
      T.reconnects += 1;
      resetFigures();
      for (let k = 0; k < 60 && feed === mine; k++) {
        if (await connect(track, null, hearIt, true)) { say("Reconnected.", true); return; }
        await new Promise((ok) => setTimeout(ok, 500));
      }
      if (feed === mine) stop("The session could not be reconnected: every worker is busy or down.");
      return;
    }
  }
}

async function startMic() {
  const mine = ++pick;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    say("The microphone needs https or localhost: play an audio file instead.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  } catch (e) {
    if (mine !== pick) return;
    if (e.name === "NotAllowedError" || e.name === "SecurityError") {
      say("Microphone permission was denied: allow the microphone for this page, or play an audio file instead.");
    } else if (e.name === "NotFoundError" || e.name === "OverconstrainedError") {
      say("No microphone was found: play an audio file instead.");
    } else {
      say(`The microphone could not be opened (${e.name}): play an audio file instead.`);
    }
    return;
  }
  if (mine !== pick) { stream.getTracks().forEach((t) => t.stop()); return; }
  say("Listening: speak.", true);
  const track = stream.getAudioTracks()[0];
  // Your own voice played back late makes speaking hard: the head's sound starts muted.
  await start(track, null, () => stream.getTracks().forEach((t) => t.stop()), false);
}

async function startFile(file) {
  const mine = ++pick;
  const ctx = new AudioContext();
  let buffer;
  try {
    buffer = await ctx.decodeAudioData(await file.arrayBuffer());
  } catch (e) {
    ctx.close();
    if (mine === pick) say(`${file.name} is not an audio file this browser can decode.`);
    return;
  }
  if (mine !== pick) { ctx.close(); return; } // another file or the microphone was picked meanwhile
  const dest = ctx.createMediaStreamDestination();
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(dest);
  src.onended = () => {
    if (mine === pick && T.pc) say(`${file.name} has finished; the head rests until you stop.`, true);
  };
  say(`Playing ${file.name} (${buffer.duration.toFixed(1)} s).`, true);
  await start(dest.stream.getAudioTracks()[0], () => src.start(), () => { try { src.stop(); } catch (e) {} ctx.close(); }, true);
}

$("mic").onclick = () => startMic();
$("file").onchange = (e) => { const f = e.target.files[0]; if (f) startFile(f); e.target.value = ""; };
$("stop").onclick = () => stop("Stopped.");
window.addEventListener("pagehide", () => { if (T.pc) stop(); });
T.stop = stop;
loadHeads();
