// The peerconnection web client: the same protocol and JSON messages as the native client
// (PROTOCOL.md): sign in, hanging GET, Pragma for ids, trickle ICE, BYE. Prefers H.264
// constrained baseline, packetization-mode 1, and sends and plays Opus audio (the microphone
// when the browser allows it; the Mute button sends silence). State is mirrored in
// window.pcState for tests.
'use strict';
const $ = (id) => document.getElementById(id);
const state = (window.pcState = {
  myId: null, peers: {}, peerId: null, inCall: false, status: '',
  framesDecoded: 0, framesEncoded: 0, codec: null, firstFrameMs: null, callsEnded: 0,
  audio: null, muted: false, caller: false, iceRestarts: 0,
});
let pc = null;
let localStream = null;
let pendingCandidates = [];
let sendQueue = Promise.resolve();
let callStart = 0;
let statsTimer = null;
// ICE restart, as the native client does it: only the caller restarts (both at once would
// glare), when no packet came for this long (the stats read every 100 ms say so) or the
// path has been 'disconnected' this long, or at once when it 'failed'.
const RESTART_AFTER_MS = 2500;
let restartTimer = null;
// A restart offer went out and no packet came since: failing again ends the call.
let restarting = false;
// Packets received in the call (inbound RTP, all streams) and when that count last grew.
let packetsIn = 0;
let packetsInAt = 0;
// The STUN/TURN servers the signaling server was given (--ice-server); none by default.
let iceServers = [];
fetch('/ice-servers.json').then((r) => (r.ok ? r.json() : []))
  .then((v) => { if (Array.isArray(v)) iceServers = v; }).catch(() => {});

function setStatus(text) {
  state.status = text;
  $('status').textContent = text;
}

function renderPeers() {
  const box = $('peers');
  box.textContent = '';
  for (const [id, name] of Object.entries(state.peers)) {
    const b = document.createElement('button');
    b.textContent = `Call ${name}`;
    b.dataset.peer = id;
    b.disabled = state.inCall;
    b.onclick = () => call(Number(id));
    box.appendChild(b);
  }
  $('list').classList.toggle('hidden', state.myId === null);
  $('call').classList.toggle('hidden', !state.inCall);
}

function parseEntries(text) {
  return text.split('\n').filter((l) => l.trim()).map((l) => {
    const parts = l.split(',');
    const connected = parts.pop() === '1';
    const id = Number(parts.pop());
    return { name: parts.join(','), id, connected };
  });
}

async function signIn(name) {
  const r = await fetch(`/sign_in?${name}`);
  if (!r.ok) throw new Error(`sign in: ${r.status}`);
  state.myId = Number(r.headers.get('Pragma'));
  for (const e of parseEntries(await r.text())) {
    if (e.id !== state.myId && e.connected) state.peers[e.id] = e.name;
  }
  setStatus(`Signed in as ${name} (id ${state.myId}).`);
  renderPeers();
  hangingGet();
}

async function hangingGet() {
  while (state.myId !== null) {
    let r;
    try {
      r = await fetch(`/wait?peer_id=${state.myId}`);
    } catch (e) {
      setStatus('Lost the server; retrying.');
      await new Promise((ok) => setTimeout(ok, 2000));
      continue;
    }
    const from = Number(r.headers.get('Pragma'));
    const text = await r.text();
    if (!r.ok) { setStatus(`Server answered ${r.status}: ${text}`); state.myId = null; return; }
    if (from === state.myId) {
      for (const e of parseEntries(text)) {
        if (e.id === state.myId) continue;
        if (e.connected) state.peers[e.id] = e.name; else delete state.peers[e.id];
        if (!e.connected && e.id === state.peerId) endCall('the peer left');
      }
      renderPeers();
    } else {
      onMessage(from, text).catch((e) => console.error('message', e));
    }
  }
}

function send(to, body) {
  sendQueue = sendQueue.then(() => fetch(`/message?peer_id=${state.myId}&to=${to}`, {
    method: 'POST', headers: { 'Content-Type': 'text/plain' }, body,
  })).catch((e) => console.error('send', e));
  return sendQueue;
}

function preferH264(transceiver) {
  const caps = RTCRtpReceiver.getCapabilities('video').codecs;
  const fmtp = (c) => c.sdpFmtpLine || '';
  const h264 = caps.filter((c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(fmtp(c)));
  h264.sort((a, b) => /42e01f/.test(fmtp(b)) - /42e01f/.test(fmtp(a)));
  if (!h264.length) {
    setStatus('This browser offers no H.264: it cannot call the native clients.');
    return false;
  }
  const extra = caps.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType));
  transceiver.setCodecPreferences([...h264, ...extra]);
  return true;
}

async function newPeerConnection(peer, offerer) {
  state.peerId = peer;
  state.inCall = true;
  state.framesDecoded = 0; state.framesEncoded = 0; state.firstFrameMs = null; state.codec = null;
  state.caller = offerer; restarting = false; packetsIn = 0; packetsInAt = 0;
  callStart = performance.now();
  pc = new RTCPeerConnection({ iceServers });
  window.pcData.attach(pc, offerer, () => endCall('the peer hung up (bye on the data channel)'));
  pc.onicecandidate = (e) => {
    if (e.candidate && e.candidate.candidate) {
      send(peer, JSON.stringify({
        sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex,
        candidate: e.candidate.candidate,
      }));
    }
  };
  pc.ontrack = (e) => {
    const v = $('remote');
    if (e.streams[0]) v.srcObject = e.streams[0];
    else if (v.srcObject) v.srcObject.addTrack(e.track);
    else v.srcObject = new MediaStream([e.track]);
    // The element plays the peer's sound (the call was started by a click or an answer).
    v.muted = false;
    v.play().catch(() => {});
  };
  pc.oniceconnectionstatechange = () => {
    if (!pc) return;
    const s = pc.iceConnectionState;
    if (s === 'connected' || s === 'completed') {
      clearTimeout(restartTimer); restartTimer = null; restarting = false;
    } else if (s === 'failed') {
      if (state.caller && !restarting) restartIce(); else hangUp('ICE failed');
    } else if (s === 'disconnected' && state.caller && restartTimer === null) {
      restartTimer = setTimeout(() => {
        restartTimer = null;
        if (pc && pc.iceConnectionState === 'disconnected' && !restarting) restartIce();
      }, RESTART_AFTER_MS);
    }
  };
  if (!localStream) localStream = await openMedia();
  $('local').srcObject = localStream;
  applyMute();
  statsTimer = setInterval(readStats, 100);
  setStatus(`In a call with ${state.peers[peer] || peer}.`);
  renderPeers();
}

// The caller's ICE restart: a new offer with new credentials; the callee (native or a page)
// answers it in the same call.
async function restartIce() {
  if (!pc || pc.signalingState !== 'stable') return;
  restarting = true;
  state.iceRestarts += 1;
  pc.restartIce();
  const offer = await pc.createOffer({ iceRestart: true });
  await pc.setLocalDescription(offer);
  send(state.peerId, JSON.stringify({ type: 'offer', sdp: offer.sdp }));
}

async function readStats() {
  if (!pc) return;
  const stats = await pc.getStats();
  let packets = 0;
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp') packets += s.packetsReceived || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      state.framesDecoded = s.framesDecoded || 0;
      const codec = s.codecId && stats.get(s.codecId);
      if (codec) state.codec = codec.mimeType;
      if (state.framesDecoded > 0 && state.firstFrameMs === null) {
        state.firstFrameMs = Math.round(performance.now() - callStart);
      }
    }
    if (s.type === 'outbound-rtp' && s.kind === 'video') state.framesEncoded = s.framesEncoded || 0;
    if (s.type === 'inbound-rtp' && s.kind === 'audio') {
      state.audio = {
        packetsReceived: s.packetsReceived || 0,
        packetsLost: s.packetsLost || 0,
        totalSamplesReceived: s.totalSamplesReceived || 0,
        concealedSamples: s.concealedSamples || 0,
      };
    }
  });
  const now = performance.now();
  if (packets !== packetsIn) {
    packetsIn = packets; packetsInAt = now; restarting = false;
  } else if (state.caller && packetsIn > 0 && !restarting && now - packetsInAt > RESTART_AFTER_MS) {
    restartIce();
  }
}

// The camera and the microphone; the camera alone when the microphone is refused or absent.
async function openMedia() {
  try {
    return await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (e) {
    console.warn('no microphone:', e);
    return navigator.mediaDevices.getUserMedia({ video: true });
  }
}

function audioTrack() {
  return localStream ? localStream.getAudioTracks()[0] : undefined;
}

// Muted: the track stays and sends silence, so the peer's playout carries on.
function applyMute() {
  const t = audioTrack();
  if (t) t.enabled = !state.muted;
  $('mute').textContent = state.muted ? 'Unmute' : 'Mute';
  $('mute').disabled = !t;
}

async function call(peer) {
  if (state.inCall) return;
  await newPeerConnection(peer, true);
  const tr = pc.addTransceiver(localStream.getVideoTracks()[0], { direction: 'sendrecv', streams: [localStream] });
  preferH264(tr);
  const mic = audioTrack();
  if (mic) pc.addTransceiver(mic, { direction: 'sendrecv', streams: [localStream] });
  else pc.addTransceiver('audio', { direction: 'recvonly' });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  send(peer, JSON.stringify({ type: 'offer', sdp: offer.sdp }));
}

async function onMessage(from, text) {
  if (state.inCall && from !== state.peerId) return; // busy: ignore others
  if (text.trim() === 'BYE') { if (state.peerId === from) endCall('the peer hung up'); return; }
  const msg = JSON.parse(text);
  if (!state.inCall) await newPeerConnection(from, false);
  if (msg.type === 'offer') {
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    const tr = pc.getTransceivers().find((t) => t.receiver.track.kind === 'video');
    tr.direction = 'sendrecv';
    await tr.sender.replaceTrack(localStream.getVideoTracks()[0]);
    tr.sender.setStreams(localStream);
    preferH264(tr);
    const atr = pc.getTransceivers().find((t) => t.receiver.track.kind === 'audio');
    if (atr && audioTrack()) {
      atr.direction = 'sendrecv';
      await atr.sender.replaceTrack(audioTrack());
      atr.sender.setStreams(localStream);
    }
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    send(from, JSON.stringify({ type: 'answer', sdp: answer.sdp }));
    await flushCandidates();
  } else if (msg.type === 'answer') {
    await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    await flushCandidates();
  } else if (msg.candidate !== undefined) {
    if (!msg.candidate) return;
    if (pc.remoteDescription) await pc.addIceCandidate(msg);
    else pendingCandidates.push(msg);
  }
}

async function flushCandidates() {
  for (const c of pendingCandidates.splice(0)) await pc.addIceCandidate(c);
}

function endCall(why) {
  if (!pc) return;
  clearInterval(statsTimer);
  clearTimeout(restartTimer); restartTimer = null;
  window.pcData.detach();
  pc.close();
  pc = null;
  pendingCandidates = [];
  state.inCall = false;
  state.peerId = null;
  state.callsEnded += 1;
  $('remote').srcObject = null;
  setStatus(`Call ended: ${why}.`);
  renderPeers();
}

function hangUp(why) {
  if (state.peerId !== null) send(state.peerId, 'BYE');
  window.pcData.bye();
  endCall(why);
}

$('hangup').onclick = () => hangUp('you hung up');
$('mute').onclick = () => { state.muted = !state.muted; applyMute(); };
$('signin').onsubmit = (e) => {
  e.preventDefault();
  signIn(encodeURIComponent($('name').value)).catch((err) => setStatus(String(err)));
};
window.pcApi = { signIn, call, hangUp, pc: () => pc };
window.addEventListener('beforeunload', () => {
  if (state.myId !== null) navigator.sendBeacon && fetch(`/sign_out?peer_id=${state.myId}`, { keepalive: true });
});
