"""The browser page served at ``GET /``: a call button, microphone capture
through an AudioWorklet (PCM16 24 kHz, 20 ms frames), playback of the reply
with barge-in (scheduled audio stops on ``audio_interrupted``), a live
transcript and the session's events. It reports what it played
(``played``), so a barge-in truncates the reply where the listener was.

Counters in the DOM (``#sent-frames``, ``#audio-chunks``, ``#played-ms``,
``#interrupts``) make the page checkable by a test driving a real browser.
"""

from __future__ import annotations

__all__ = ["PAGE_HTML"]

_WORKLET = r"""
class Pcm16Capture extends AudioWorkletProcessor {
  constructor() { super(); this.buf = new Int16Array(480); this.n = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) {
      for (let i = 0; i < ch.length; i++) {
        const s = Math.max(-1, Math.min(1, ch[i]));
        this.buf[this.n++] = s < 0 ? s * 32768 : s * 32767;
        if (this.n === this.buf.length) {
          this.port.postMessage(this.buf.buffer, [this.buf.buffer]);
          this.buf = new Int16Array(480); this.n = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor('pcm16-capture', Pcm16Capture);
"""

PAGE_HTML = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ray-realtime voice</title>
<style>
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
#transcript div{margin:.3rem 0}.user{color:#245}.assistant{color:#452}
#events{font:12px monospace;height:12rem;overflow:auto;background:#f4f4f4;padding:.5rem}
</style></head><body>
<h1>ray-realtime voice</h1>
<p><button id="call">Call</button> <span id="status">idle</span></p>
<p>sent frames <b id="sent-frames">0</b> · reply chunks <b id="audio-chunks">0</b> ·
played ms <b id="played-ms">0</b> · interrupts <b id="interrupts">0</b></p>
<h2>Transcript</h2><div id="transcript"></div>
<h2>Events</h2><div id="events"></div>
<script>
const WORKLET = """
    + repr(_WORKLET)
    + """;
const $ = (id) => document.getElementById(id);
const bump = (id, by) => { $(id).textContent = String(Number($(id).textContent) + by); };
let ws = null, ctx = null, nextTime = 0, playing = [], pendingMeta = [];
const items = new Map();
function log(text) {
  const line = document.createElement('div'); line.textContent = text;
  $('events').prepend(line);
  while ($('events').childNodes.length > 200) $('events').lastChild.remove();
}
function render() {
  const box = $('transcript'); box.textContent = '';
  for (const [, it] of items) {
    const d = document.createElement('div'); d.className = it.role;
    d.textContent = it.role + ': ' + it.text; box.append(d);
  }
}
function stopPlayback() {
  for (const p of playing) { try { p.src.onended = null; p.src.stop(); } catch (e) {} }
  playing = []; nextTime = 0;
}
function play(meta, data) {
  const pcm = new Int16Array(data);
  const buf = ctx.createBuffer(1, pcm.length, 24000);
  const out = buf.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource(); src.buffer = buf; src.connect(ctx.destination);
  nextTime = Math.max(nextTime, ctx.currentTime + 0.02);
  src.start(nextTime); nextTime += buf.duration;
  const entry = {src};
  playing.push(entry);
  src.onended = () => {
    playing = playing.filter((p) => p !== entry);
    const ms = buf.duration * 1000; bump('played-ms', Math.round(ms));
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(
      {type: 'played', item_id: meta.item_id, content_index: meta.content_index, ms}));
  };
}
function onMessage(ev) {
  if (typeof ev.data !== 'string') {
    const meta = pendingMeta.shift();
    if (meta) { bump('audio-chunks', 1); play(meta, ev.data); }
    return;
  }
  const msg = JSON.parse(ev.data);
  if (msg.type === 'audio') { pendingMeta.push(msg); return; }
  log(msg.type + (msg.message ? ': ' + msg.message : ''));
  if (msg.type === 'audio_interrupted') { stopPlayback(); bump('interrupts', 1); }
  else if (msg.type === 'transcript_delta') {
    const it = items.get(msg.item_id) || {role: 'assistant', text: ''};
    it.text += msg.delta; items.set(msg.item_id, it); render();
  } else if (msg.type === 'transcript') {
    for (const it of msg.items) {
      const old = items.get(it.item_id);
      const text = it.text || (old ? old.text : '');
      if (it.text || !old) items.set(it.item_id, {role: it.role, text});
    }
    render();
  }
}
async function call() {
  if (ws) { ws.close(); return; }
  $('status').textContent = 'connecting';
  const tok = await (await fetch('/browser/token')).json();
  ctx = new AudioContext({sampleRate: 24000});
  await ctx.resume();
  const url = URL.createObjectURL(new Blob([WORKLET], {type: 'application/javascript'}));
  await ctx.audioWorklet.addModule(url);
  const mic = await navigator.mediaDevices.getUserMedia(
    {audio: {channelCount: 1, echoCancellation: true, noiseSuppression: false,
             autoGainControl: false}});
  const node = new AudioWorkletNode(ctx, 'pcm16-capture');
  ctx.createMediaStreamSource(mic).connect(node);
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = '?token=' + encodeURIComponent(tok.token);
  ws = new WebSocket(proto + '//' + location.host + '/browser/stream' + query);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => { $('status').textContent = 'in call'; $('call').textContent = 'Hang up'; };
  ws.onmessage = onMessage;
  ws.onclose = (e) => {
    $('status').textContent = 'closed ' + e.code + (e.reason ? ' ' + e.reason : '');
    stopPlayback(); node.disconnect(); mic.getTracks().forEach((t) => t.stop());
    ws = null; $('call').textContent = 'Call';
  };
  node.port.onmessage = (e) => {
    if (ws && ws.readyState === 1) { ws.send(e.data); bump('sent-frames', 1); }
  };
}
$('call').onclick = () => call().catch((e) => { $('status').textContent = 'error: ' + e; });
</script></body></html>
"""
)
