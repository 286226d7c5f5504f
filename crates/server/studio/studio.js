// Reelsmith Studio: a page over the public HTTP API (the same calls any client makes), with no
// build step. Progress streams over SSE read through fetch, so an API key can ride in a header.

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const API = '/api/v1';
const VOICES = {
  'espeak-ng': { engine: 'espeak-ng', name: 'en-us' },
  piper: { engine: 'piper', name: 'en_US-joe-medium' },
};

const state = {
  key: localStorage.getItem('reelsmith.key') || '',
  watching: null, // { id, abort, stages: Map(name -> {el, started}) }
  historyCursor: null,
  trend: [], // { t, api_p95, queue }
  objectUrls: [],
};

class ApiFailure extends Error {
  constructor(status, code, message, issues = [], retryAfter = null) {
    super(message);
    Object.assign(this, { status, code, issues, retryAfter });
  }
}

function headers(extra = {}) {
  return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : extra;
}

async function api(path, opts = {}) {
  let resp;
  try {
    resp = await fetch(path, { ...opts, headers: headers(opts.headers) });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiFailure(0, 'network', `Cannot reach the Reelsmith server (${e.message}). Is it running?`);
  }
  if (!resp.ok) {
    let err = null;
    try { err = (await resp.json()).error; } catch { /* not JSON: described below */ }
    throw new ApiFailure(resp.status, err?.code ?? `http_${resp.status}`,
      err?.message ?? `The server answered ${resp.status} ${resp.statusText}.`,
      err?.issues ?? [], resp.headers.get('retry-after'));
  }
  return resp;
}

const json = async (path, opts) => (await api(path, opts)).json();

/** An error as a sentence for the person in front of the page. */
function explain(e) {
  if (!(e instanceof ApiFailure)) return `Something went wrong in the page: ${e.message}`;
  switch (e.status) {
    case 401: return 'This server needs an API key: paste yours in the box at the top right.';
    case 403: return `The API key was refused: ${e.message}`;
    case 413: return `Too large: ${e.message}`;
    case 415: return `Unsupported file: ${e.message}`;
    case 429: return `${e.message}${e.retryAfter ? ` Try again in ${e.retryAfter} s.` : ''}`;
    default: return e.message;
  }
}

// ---------------------------------------------------------------- errors next to fields

function clearErrors(form) {
  $$('.field-error, .form-error', form).forEach((el) => { el.textContent = ''; });
  $$('.invalid', form).forEach((el) => el.classList.remove('invalid'));
  const list = $('.issues', form);
  if (list) list.replaceChildren();
}

/** Whether `path` is `prefix` or lies under it (`scenes[1]` covers `scenes[1].narration`). */
const under = (path, prefix) => path === prefix || path.startsWith(`${prefix}.`) || path.startsWith(`${prefix}[`);

function showError(form, e) {
  const issues = e.issues ?? [];
  let placed = 0;
  for (const issue of issues) {
    const path = issue.path.replace(/^spec\./, '');
    const target = $$('[data-error-for]', form)
      .filter((el) => under(path, el.dataset.errorFor))
      .sort((a, b) => b.dataset.errorFor.length - a.dataset.errorFor.length)[0];
    if (!target) continue;
    target.textContent = target.textContent ? `${target.textContent} ${issue.message}` : issue.message;
    // The field the issue is about, or the one holding it (`scenes[1].narration.text`).
    $$('[data-path]', form)
      .filter((el) => under(path, el.dataset.path) || under(el.dataset.path, path))
      .forEach((el) => el.classList.add('invalid'));
    placed += 1;
  }
  const list = $('.issues', form);
  if (list) {
    if (issues.length) $('[data-path="spec"]', form)?.classList.add('invalid');
    for (const issue of issues) {
      const li = document.createElement('li');
      li.textContent = `${issue.path}: ${issue.message}`;
      list.append(li);
    }
  }
  if (placed < issues.length || issues.length === 0 || list) {
    $('.form-error', form).textContent = explain(e);
  }
  const first = $('.invalid', form);
  if (first) first.focus({ preventScroll: false });
}

function fieldError(form, path, message) {
  const el = $(`[data-error-for="${CSS.escape(path)}"]`, form);
  if (el) el.textContent = message;
  $$(`[data-path="${CSS.escape(path)}"]`, form).forEach((x) => x.classList.add('invalid'));
  return false;
}

// ---------------------------------------------------------------- uploads

async function uploadAsset(file) {
  const body = new FormData();
  body.append('file', file, file.name);
  return json(`${API}/assets`, { method: 'POST', body });
}

/** Wires a drop zone: click or drop a file; `onFile(file, zone)` runs for each one. */
function dropZone(zone, onFile) {
  const input = $('input[type=file]', zone);
  const take = async (files) => {
    for (const f of files) await onFile(f, zone);
  };
  input.addEventListener('change', () => take([...input.files]).finally(() => { input.value = ''; }));
  zone.addEventListener('dragover', (ev) => { ev.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (ev) => {
    ev.preventDefault();
    zone.classList.remove('over');
    take([...ev.dataTransfer.files]);
  });
  zone.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') input.click(); });
}

/** Uploads a picture into a zone, shows it, keeps its asset reference on the zone. */
async function uploadInto(zone, file, errorEl) {
  errorEl.textContent = '';
  zone.classList.remove('invalid');
  zone.classList.add('busy');
  try {
    const asset = await uploadAsset(file);
    zone.dataset.ref = asset.ref;
    zone.dataset.mediaType = asset.media_type ?? '';
    zone.dataset.width = asset.width ?? '';
    zone.dataset.height = asset.height ?? '';
    const img = $('img', zone);
    if (img && file.type.startsWith('image/')) {
      img.src = remember(URL.createObjectURL(file));
      img.hidden = false;
      $('.drop-hint', zone).hidden = true;
    } else {
      $('.drop-hint', zone).textContent = `${file.name} ✓`;
    }
  } catch (e) {
    delete zone.dataset.ref;
    errorEl.textContent = explain(e);
    zone.classList.add('invalid');
  } finally {
    zone.classList.remove('busy');
  }
}

function remember(url) {
  state.objectUrls.push(url);
  return url;
}

// ---------------------------------------------------------------- storyboard form

const storyboard = $('#storyboard-form');

function addScene(narration = '', color = '#1e3c72', motion = 'ken-burns') {
  const li = $('#scene-template').content.firstElementChild.cloneNode(true);
  $('.narration', li).value = narration;
  $('.color', li).value = color;
  $('.motion', li).value = motion;
  $('.remove', li).addEventListener('click', () => { li.remove(); renumberScenes(); });
  const zone = $('.drop', li);
  dropZone(zone, (file) => uploadInto(zone, file, $('[data-error-for$="image"]', li)));
  $('#scenes').append(li);
  renumberScenes();
  return li;
}

/** Scene fields carry their spec path, so the server's error paths find them. */
function renumberScenes() {
  $$('#scenes > li').forEach((li, i) => {
    const p = `scenes[${i}]`;
    $('.scene-title', li).textContent = `Scene ${i + 1}`;
    $('.drop', li).dataset.path = `${p}.image`;
    $('.narration', li).dataset.path = `${p}.narration.text`;
    $('.motion', li).dataset.path = `${p}.motion`;
    $('.title', li).dataset.path = `${p}.title`;
    const errs = $$('.field-error', li);
    errs[0].dataset.errorFor = `${p}.image`;
    errs[1].dataset.errorFor = `${p}.narration`;
    errs[2].dataset.errorFor = p;
  });
  $$('#scenes .remove').forEach((b) => { b.disabled = $$('#scenes > li').length === 1; });
}

function storyboardSpec() {
  const f = storyboard.elements;
  const [width, height] = f.size.value.split('x').map(Number);
  const lis = $$('#scenes > li');
  const scenes = lis.map((li, i) => {
    const scene = {};
    const ref = $('.drop', li).dataset.ref;
    const clip = ($('.drop', li).dataset.mediaType || '').startsWith('video/');
    if (ref && clip) Object.assign(scene, { video: { file: ref }, fit: 'cover' });
    else if (ref) Object.assign(scene, { image: ref, fit: 'cover' });
    else scene.background = { color: $('.color', li).value };
    const title = $('.title', li).value.trim();
    if (title) scene.title = title;
    const text = $('.narration', li).value;
    if (text !== '') scene.narration = { text };
    const [type, provider] = $('.motion', li).value.split(':');
    scene.motion = provider ? { type, provider } : { type };
    if (i < lis.length - 1 && f.transition.value !== 'cut') scene.transition = { type: f.transition.value, duration: 0.5 };
    return scene;
  });
  return {
    version: 1,
    output: { width, height, fps: 30 },
    voice: VOICES[f.voice.value],
    subtitles: { enabled: f.subtitles.checked, style: 'word-highlight' },
    scenes,
  };
}

storyboard.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors(storyboard);
  if ($$('#scenes .drop.busy').length) {
    $('.form-error', storyboard).textContent = 'Wait for the uploads to finish.';
    return;
  }
  await submit(storyboard, { spec: storyboardSpec() });
});
$('#add-scene').addEventListener('click', () => addScene('', '#2a5298'));

// ---------------------------------------------------------------- from a prompt

const promptForm = $('#prompt-form');

/** The words box is the text or the topic, and its errors follow it. */
function promptMode() {
  const f = promptForm.elements;
  const topic = f.mode.value === 'topic';
  f.words.dataset.path = topic ? 'prompt.topic' : 'prompt.text';
  f.words.placeholder = topic ? 'What the video is about' : 'Paragraphs and sentences become scenes';
  $('.words-label', promptForm).textContent = topic ? 'Topic' : 'Text';
  f.duration.disabled = !topic;
}
promptForm.elements.mode.addEventListener('change', promptMode);

function promptRequest() {
  const f = promptForm.elements;
  const size = f.size.value.includes('x')
    ? { width: Number(f.size.value.split('x')[0]), height: Number(f.size.value.split('x')[1]) }
    : f.size.value;
  const p = { size, voice: { engine: f.voice.value }, visuals: f.visuals.value.split(',') };
  if (f.mode.value === 'topic') Object.assign(p, { topic: f.words.value, duration_s: Number(f.duration.value) });
  else p.text = f.words.value;
  if (f.style.value.trim()) p.style = f.style.value.trim();
  return p;
}

promptForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors(promptForm);
  await submit(promptForm, { prompt: promptRequest() });
});

/** The plan of a generation made from a prompt: each scene's words, picture and voice, with sources. */
function showPlan(g) {
  const plan = g.prompt?.plan;
  $('#plan').hidden = !plan;
  if (!plan) return;
  $('#plan-title').textContent = plan.title ? `“${plan.title}”` : '';
  const rows = plan.scenes.map((scene, i) => {
    const v = g.prompt.visuals?.[i] ?? {};
    const voice = g.prompt.voices?.[i];
    const tr = document.createElement('tr');
    const cell = (content) => {
      const td = document.createElement('td');
      if (content instanceof Node) td.append(content);
      else td.textContent = content;
      tr.append(td);
      return td;
    };
    cell(String(i + 1));
    cell(scene.narration);
    const source = [v.source, v.provider, v.author && `by ${v.author}`].filter(Boolean).join(' · ');
    if (v.page_url) {
      const a = document.createElement('a');
      Object.assign(a, { href: v.page_url, textContent: source, target: '_blank', rel: 'noopener' });
      cell(a);
    } else {
      cell(source || 'card');
    }
    cell(voice ? `${voice.provider} · ${voice.voice}` : (g.prompt.request?.voice?.engine ?? 'espeak-ng'));
    return tr;
  });
  $('#plan-scenes tbody').replaceChildren(...rows);
}

/** The ledger of provider calls in the profile (a prompt's only). */
function showLedger(g) {
  const ledger = g.prompt?.ledger;
  $('#profile-ledger').hidden = !g.prompt;
  if (!g.prompt) return;
  const rows = (ledger ?? []).map((e) => {
    const tr = document.createElement('tr');
    for (const v of [e.stage, e.provider, e.model, `${fmt(e.units, 0)} ${e.unit_kind}`, fmt(e.est_cost_usd, 5), e.cache_hit ? 'yes' : 'no']) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 6;
    td.textContent = 'no provider calls';
    tr.append(td);
    rows.push(tr);
  }
  $('#profile-ledger tbody').replaceChildren(...rows);
}

/** A planned storyboard into the storyboard form: pictures stay asset references. */
function loadIntoForm(spec) {
  $('#scenes').replaceChildren();
  for (const scene of spec.scenes) {
    const n = scene.narration ?? {};
    const li = addScene(n.text ?? n.transcript ?? '', scene.background?.color ?? '#1e3c72', scene.motion?.type === 'none' ? 'none' : 'ken-burns');
    $('.title', li).value = scene.title ?? scene.overlay?.text ?? '';
    const file = scene.video?.file ?? scene.image;
    if (file) {
      const zone = $('.drop', li);
      zone.dataset.ref = file;
      zone.dataset.mediaType = scene.video ? 'video/mp4' : 'image/*';
      $('.drop-hint', zone).textContent = `${scene.video ? 'clip' : 'picture'} ${file}`;
    }
  }
  const f = storyboard.elements;
  const size = `${spec.output.width}x${spec.output.height}`;
  if ([...f.size.options].some((o) => o.value === size)) f.size.value = size;
}

$('#edit-form').addEventListener('click', async () => {
  if (!state.watching) return;
  try {
    const g = await json(`${API}/generations/${state.watching.id}`);
    if (!g.spec) return;
    loadIntoForm(g.spec);
    selectTab('storyboard');
    $('#create').scrollIntoView({ behavior: 'smooth' });
  } catch (e) {
    $('#watch-error').textContent = explain(e);
  }
});

// ---------------------------------------------------------------- talking photo form

const talking = $('#talking-form');
const photoZone = $('.drop[data-path="scenes[0].image"]', talking);
const audioZone = $('.drop[data-path="scenes[0].narration.audio"]', talking);
dropZone(photoZone, (file) => uploadInto(photoZone, file, $('[data-error-for="scenes[0].image"]', talking)));
dropZone(audioZone, (file) => uploadInto(audioZone, file, $('[data-error-for="scenes[0].narration.audio"]', talking)));

const even = (x) => Math.max(2, Math.round(x / 2) * 2);

function talkingSpec() {
  const f = talking.elements;
  let size;
  if (f.framing.value === 'square') size = [720, 720];
  else if (f.framing.value === 'portrait') size = [720, 1280];
  else {
    const w = Number(photoZone.dataset.width) || 720;
    const h = Number(photoZone.dataset.height) || 720;
    const s = 720 / Math.max(w, h);
    size = [even(w * s), even(h * s)];
  }
  const script = f.script.value.trim();
  const narration = audioZone.dataset.ref
    ? { audio: audioZone.dataset.ref, ...(script ? { transcript: script } : {}) }
    : { text: f.script.value };
  return {
    version: 1,
    output: { width: size[0], height: size[1], fps: 30 },
    voice: VOICES[f.voice.value],
    subtitles: { enabled: f.subtitles.checked, style: 'word-highlight' },
    scenes: [{
      image: photoZone.dataset.ref,
      fit: 'cover',
      motion: { type: 'talking-head', framing: f.framing.value === 'photo' ? 'photo' : 'face' },
      narration,
      padding: 0.4,
      ...(f.background.value === 'blur' ? { replace_background: { blur: 16 } } : {}),
      ...(f.background.value === 'color' ? { replace_background: { color: f.background_color.value } } : {}),
    }],
  };
}

talking.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors(talking);
  let ok = true;
  if (!photoZone.dataset.ref) ok = fieldError(talking, 'scenes[0].image', 'Choose a photo with a face first.');
  if (!talking.elements.script.value.trim() && !audioZone.dataset.ref) {
    ok = fieldError(talking, 'scenes[0].narration.text', 'Write what the photo should say, or drop a recording.');
  }
  if (ok) await submit(talking, { spec: talkingSpec() });
});

// ---------------------------------------------------------------- JSON form

const jsonForm = $('#json-form');
const jsonFiles = new Map();
const EXAMPLE = {
  version: 1,
  output: { width: 640, height: 360, fps: 30 },
  voice: { engine: 'espeak-ng', name: 'en-us' },
  scenes: [
    { background: { gradient: { from: '#1e3c72', to: '#2a5298' } }, title: 'Reelsmith',
      narration: { text: 'Hello from the JSON editor.' }, transition: { type: 'crossfade', duration: 0.5 } },
    { background: { color: '#7a1f3d' }, narration: { text: 'Name files here and drop them below.' },
      motion: { type: 'ken-burns' } },
  ],
};
$('#load-example').addEventListener('click', () => {
  jsonForm.elements.spec.value = JSON.stringify(EXAMPLE, null, 2);
});
dropZone($('.drop', jsonForm), async (file) => {
  jsonFiles.set(file.name, file);
  const li = document.createElement('li');
  li.textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KiB)`;
  $('.files', jsonForm).append(li);
});
jsonForm.elements.spec.dataset.path = 'spec';

jsonForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors(jsonForm);
  let value;
  try {
    value = JSON.parse(jsonForm.elements.spec.value);
  } catch (e) {
    jsonForm.elements.spec.classList.add('invalid');
    $('.form-error', jsonForm).textContent = `The spec is not valid JSON: ${e.message}`;
    return;
  }
  // Either a bare spec or a whole request ({"spec": …, "priority": …}).
  const envelope = value && typeof value === 'object' && 'spec' in value ? value : { spec: value };
  await submit(jsonForm, envelope, jsonFiles);
});

// ---------------------------------------------------------------- submitting and watching

async function submit(form, envelope, files = new Map()) {
  const button = $('button[type=submit]', form);
  button.disabled = true;
  try {
    let body;
    let hdrs = {};
    if (files.size) {
      body = new FormData();
      body.append('request', new Blob([JSON.stringify(envelope)], { type: 'application/json' }));
      for (const [name, file] of files) body.append(name, file, name);
    } else {
      body = JSON.stringify(envelope);
      hdrs = { 'Content-Type': 'application/json' };
    }
    const g = await json(`${API}/generations`, { method: 'POST', body, headers: hdrs });
    watch(g.id);
    loadHistory();
  } catch (e) {
    showError(form, e);
  } finally {
    button.disabled = false;
  }
}

/** Reads an SSE response body; calls `onEvent` with each `data:` JSON. */
async function readEvents(resp, onEvent) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  }
}

function watch(id) {
  if (state.watching) state.watching.abort.abort();
  const abort = new AbortController();
  const w = { id, abort, stages: new Map(), last: null, final: false, planShown: false };
  state.watching = w;
  $('#watch').hidden = false;
  $('#watch-id').textContent = id;
  $('#watch-stages').replaceChildren();
  $('#watch-error').textContent = '';
  // Nothing of the previous generation stays on screen until this one's first event.
  $('#watch-status').textContent = '…';
  $('#watch-status').className = 'badge';
  $('#watch-stage').textContent = '';
  $('#watch-progress').value = 0;
  $('#watch-percent').textContent = '0%';
  $('#result').hidden = true;
  $('#plan').hidden = true;
  $('#player').removeAttribute('src');
  $$('#player track').forEach((t) => t.remove());
  stopLive();
  $$('#history-list li').forEach((li) => li.classList.toggle('selected', li.dataset.id === id));
  const follow = async () => {
    try {
      const resp = await api(`${API}/generations/${id}/events`, { signal: abort.signal, headers: { Accept: 'text/event-stream' } });
      await readEvents(resp, (ev) => onProgress(w, ev));
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e instanceof ApiFailure && e.status >= 400 && e.status < 500) {
        $('#watch-error').textContent = explain(e);
        return;
      }
    }
    // The stream ended early (network, server restart): poll until the generation is final.
    while (!w.final && state.watching === w) {
      await new Promise((r) => setTimeout(r, 1000));
      try {
        const g = await json(`${API}/generations/${id}`, { signal: abort.signal });
        onProgress(w, { ...g, progress: g.progress / 100, error: g.error?.message });
      } catch (e) {
        if (e.name === 'AbortError') return;
      }
    }
  };
  follow();
  playLive(w);
}

/** The live stream of the generation being watched, while it renders. */
let live = null;

function stopLive() {
  if (!live) return;
  live.abort.abort();
  live.hls?.destroy();
  const v = $('#live-player');
  v.pause();
  v.removeAttribute('src');
  v.load();
  $('#live').hidden = true;
  live = null;
}

/** hls.js, fetched the first time a live stream plays (it is large: not on every page load). */
let hlsModule = null;
function loadHls() {
  hlsModule ??= import('/hls.light.min.mjs').then((m) => m.default);
  return hlsModule;
}

/**
 * Plays the generation's HLS stream (`stream.m3u8`, fMP4 pieces) while it renders, with hls.js:
 * it reads the playlist again as it grows and appends each piece to a MediaSource, until the
 * playlist ends. The finished MP4 replaces it (showResult). The page's data attributes on the
 * player (pieces, ended, error) say how far it got.
 */
async function playLive(w) {
  stopLive();
  const me = { abort: new AbortController(), hls: null };
  live = me;
  const signal = me.abort.signal;
  const url = `${API}/generations/${w.id}/stream.m3u8`;
  const video = $('#live-player');
  video.dataset.pieces = '0';
  for (const k of ['ended', 'error', 'player']) delete video.dataset[k];
  try {
    // The server holds this request until the first piece is stored; a render that fails
    // first, or a server with live streams off, answers 404 and the MP4 alone will come.
    await (await api(url, { signal })).text();
    const Hls = await loadHls();
    if (live !== me) return;
    if (!Hls.isSupported()) {
      // Native HLS (Safari) cannot send the API key: only on servers without keys.
      if (state.key || w.final || !video.canPlayType('application/vnd.apple.mpegurl')) return;
      video.dataset.player = 'native';
      video.src = url;
      $('#live').hidden = false;
      video.play().catch(() => {});
      return;
    }
    const hls = new Hls({
      enableWorker: false, // fMP4 pieces need no transmuxing, and the CSP allows no blob workers
      startPosition: 0, // from the first second, not the live edge
      // Opened here so the key can be set at once (hls.js opens it only if still unopened).
      xhrSetup: (xhr, uri) => {
        xhr.open('GET', uri, true);
        if (state.key) xhr.setRequestHeader('Authorization', `Bearer ${state.key}`);
      },
    });
    me.hls = hls;
    video.dataset.player = 'hls.js';
    let pieces = 0;
    hls.on(Hls.Events.FRAG_BUFFERED, () => {
      video.dataset.pieces = String(++pieces);
      // Not over the finished MP4, when it came first (or the generation was already done).
      if (pieces === 1 && live === me && !w.final) {
        $('#live').hidden = false;
        video.play().catch(() => {});
      }
    });
    // The playlist has ended and its last piece is in the buffer.
    hls.on(Hls.Events.BUFFER_EOS, () => { video.dataset.ended = 'true'; });
    hls.on(Hls.Events.ERROR, (_, d) => {
      if (!d.fatal) return;
      video.dataset.error = `live stream: ${d.details}`;
      hls.destroy();
      me.hls = null;
    });
    hls.attachMedia(video);
    hls.loadSource(url);
  } catch (e) {
    if (e.name !== 'AbortError') video.dataset.error = explain(e);
  }
}

function onProgress(w, ev) {
  if (state.watching !== w || w.final) return;
  const pct = Math.round((ev.progress ?? 0) * 1000) / 10;
  const badge = $('#watch-status');
  badge.textContent = ev.status;
  badge.className = `badge ${ev.status}`;
  $('#watch-progress').value = pct;
  $('#watch-percent').textContent = `${pct}%`;
  $('#watch-stage').textContent = ev.stage ?? '';
  if (ev.stage && !w.stages.has(ev.stage)) {
    for (const s of w.stages.values()) finishStage(s);
    const li = document.createElement('li');
    li.className = 'current';
    li.textContent = ev.stage;
    $('#watch-stages').append(li);
    w.stages.set(ev.stage, { el: li, name: ev.stage, started: performance.now(), done: false });
  }
  $('#cancel').hidden = !['queued', 'running'].includes(ev.status);
  // A prompt's plan shows as soon as its job moves past planning.
  if (!w.planShown && ev.stage && !['plan', 'queued', 'retrying'].includes(ev.stage)) {
    w.planShown = true;
    json(`${API}/generations/${w.id}`).then((g) => { if (state.watching === w) showPlan(g); }).catch(() => {});
  }
  if (['succeeded', 'failed', 'cancelled'].includes(ev.status)) {
    w.final = true;
    for (const s of w.stages.values()) finishStage(s);
    w.abort.abort();
    if (ev.status === 'succeeded') showResult(w.id);
    else $('#watch-error').textContent = ev.status === 'failed' ? `The render failed: ${ev.error ?? 'no reason given'}` : 'Cancelled.';
    loadHistory();
  }
}

function finishStage(s) {
  if (s.done) return;
  s.done = true;
  s.el.className = 'done';
  s.el.textContent = `${s.name} ✓ ${((performance.now() - s.started) / 1000).toFixed(1)} s`;
}

$('#cancel').addEventListener('click', async () => {
  if (!state.watching) return;
  try {
    await api(`${API}/generations/${state.watching.id}/cancel`, { method: 'POST' });
  } catch (e) {
    $('#watch-error').textContent = explain(e);
  }
});

// A past generation's spec into the editor: its files stay asset references, so it resubmits as is.
$('#edit-spec').addEventListener('click', async () => {
  if (!state.watching) return;
  try {
    const g = await json(`${API}/generations/${state.watching.id}`);
    jsonForm.elements.spec.value = JSON.stringify(g.spec, null, 2);
    selectTab('json');
    $('#create').scrollIntoView({ behavior: 'smooth' });
  } catch (e) {
    $('#watch-error').textContent = explain(e);
  }
});

/** A URL the page can hand to <video>/<img>: direct when no key is needed, else a fetched blob. */
async function mediaUrl(path) {
  if (!state.key) return path;
  const blob = await (await api(path)).blob();
  return remember(URL.createObjectURL(blob));
}

async function showResult(id) {
  try {
    const g = await json(`${API}/generations/${id}`);
    if (state.watching?.id !== id || !g.result) return;
    const r = g.result;
    const player = $('#player');
    player.src = await mediaUrl(r.video_url);
    // The finished MP4 takes over where the live stream was.
    const liveVideo = $('#live-player');
    if (live && !liveVideo.paused && liveVideo.currentTime > 0) {
      player.currentTime = liveVideo.currentTime;
      player.play().catch(() => {});
    }
    $('#live').hidden = true;
    liveVideo.pause();
    if (r.subtitles_url) {
      const track = document.createElement('track');
      Object.assign(track, { kind: 'subtitles', srclang: 'en', label: 'Subtitles', default: true });
      track.src = await mediaUrl(r.subtitles_url);
      player.append(track);
    }
    $('#download-video').href = player.src;
    $('#download-video').download = `${id}.mp4`;
    $('#download-vtt').hidden = !r.subtitles_url;
    if (r.subtitles_url) $('#download-vtt').href = $('track', player).src;
    const report = await json(r.report_url);
    $('#download-report').href = remember(URL.createObjectURL(new Blob([JSON.stringify(report, null, 2)], { type: 'application/json' })));
    $('#download-report').download = `${id}-report.json`;
    showProfile(report, g);
    showPlan(g);
    showLedger(g);
    $('#result').hidden = false;
  } catch (e) {
    $('#watch-error').textContent = explain(e);
  }
}

function figure(value, label) {
  const d = document.createElement('div');
  d.className = 'figure';
  const b = document.createElement('b');
  b.textContent = value;
  const s = document.createElement('span');
  s.textContent = label;
  d.append(b, s);
  return d;
}

const fmt = (x, digits = 2) => (x === null || x === undefined || Number.isNaN(x) ? '—' : Number(x).toFixed(digits));

function showProfile(report, g) {
  const wait = g.started_at_ms && g.created_at_ms ? (g.started_at_ms - g.created_at_ms) / 1000 : null;
  $('#profile-summary').replaceChildren(
    figure(`${fmt(report.duration_s, 1)} s`, `video, ${report.width}×${report.height} @ ${report.fps}`),
    figure(`${fmt(report.wall_s)} s`, 'render wall time'),
    figure(`${fmt(report.cpu_s)} s`, 'CPU time'),
    figure(`${fmt(wait)} s`, 'queue wait'),
    figure(`${fmt(report.peak_tree_rss_mb, 0)} MB`, 'peak memory (RSS)'),
    figure(`${fmt((report.cache_hit_ratio ?? 0) * 100, 0)}%`, `cache hits (${report.cache_hits}/${report.cache_hits + report.cache_misses})`),
    figure(`${report.segments_encoded}/${report.segments_total}`, 'segments encoded'),
  );
  const rows = Object.entries(report.stages ?? {}).map(([name, s]) => {
    const tr = document.createElement('tr');
    for (const v of [name, fmt(s.wall_s, 3), fmt(s.cpu_s, 3), s.items, s.cache_hits, s.cache_misses]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  });
  $('#profile-stages tbody').replaceChildren(...rows);
}

// ---------------------------------------------------------------- history

async function loadHistory(more = false) {
  const list = $('#history-list');
  try {
    const q = new URLSearchParams({ limit: '12' });
    if (more && state.historyCursor) q.set('cursor', state.historyCursor);
    const page = await json(`${API}/generations?${q}`);
    state.historyCursor = page.next_cursor;
    $('#history-more').hidden = !page.next_cursor;
    const items = await Promise.all(page.items.map(historyItem));
    if (more) list.append(...items);
    else list.replaceChildren(...items);
    if (!more && !items.length) {
      const li = document.createElement('li');
      li.className = 'empty';
      li.textContent = 'No generations yet.';
      list.append(li);
    }
  } catch (e) {
    const li = document.createElement('li');
    li.className = 'form-error';
    li.textContent = explain(e);
    list.replaceChildren(li);
  }
}

async function historyItem(g) {
  const li = document.createElement('li');
  li.dataset.id = g.id;
  li.dataset.status = g.status;
  li.classList.toggle('selected', state.watching?.id === g.id);
  const thumb = document.createElement('img');
  thumb.className = 'thumb';
  thumb.alt = '';
  if (g.result) {
    try { thumb.src = await mediaUrl(g.result.thumbnail_url); } catch { /* a missing thumbnail is not worth a message */ }
  }
  const meta = document.createElement('div');
  meta.className = 'meta';
  const id = document.createElement('code');
  id.textContent = g.id;
  const when = new Date(g.created_at_ms).toLocaleString();
  const dur = g.result ? `${g.result.duration_s.toFixed(1)} s · ${g.result.width}×${g.result.height}` : `${g.progress}%`;
  const wall = g.timings?.wall_s ? ` · rendered in ${g.timings.wall_s.toFixed(2)} s` : '';
  meta.append(id, document.createElement('br'), `${when} · ${dur}${wall}`);
  const badge = document.createElement('span');
  badge.className = `badge ${g.status}`;
  badge.textContent = g.status;
  li.append(thumb, meta, badge);
  li.addEventListener('click', () => watch(g.id));
  return li;
}

$('#refresh-history').addEventListener('click', () => loadHistory());
$('#history-more').addEventListener('click', () => loadHistory(true));

// ---------------------------------------------------------------- performance panel

const SVG = 'http://www.w3.org/2000/svg';
function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Grouped bars: p50/p95/p99 per stage, on one scale. */
function drawStages(stages) {
  const svg = $('#chart-stages');
  const W = svg.clientWidth || 500;
  const H = 200;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const names = Object.keys(stages);
  if (!names.length) {
    svg.replaceChildren(svgEl('text', { x: 12, y: 24 }, 'No renders finished in this window yet.'));
    return;
  }
  const max = Math.max(...names.map((n) => stages[n].p99_ms), 1);
  const left = 8;
  const bottom = H - 22;
  const slot = (W - left) / names.length;
  const bar = Math.max(2, Math.min(18, slot / 4));
  const kids = [];
  names.forEach((n, i) => {
    const x0 = left + i * slot + (slot - 3 * bar) / 2;
    ['p50', 'p95', 'p99'].forEach((p, j) => {
      const v = stages[n][`${p}_ms`];
      const h = (v / max) * (bottom - 16);
      const r = svgEl('rect', { x: x0 + j * bar, y: bottom - h, width: bar - 1, height: Math.max(h, 1), class: p });
      r.append(svgEl('title', {}, `${n} ${p}: ${v.toFixed(1)} ms`));
      kids.push(r);
    });
    kids.push(svgEl('text', { x: x0, y: H - 6 }, n.length > 12 ? `${n.slice(0, 11)}…` : n));
  });
  kids.push(svgEl('text', { x: W - 8, y: 12, 'text-anchor': 'end' }, `max ${max.toFixed(0)} ms`));
  svg.replaceChildren(...kids);
}

function drawTrend() {
  const svg = $('#chart-trend');
  const W = svg.clientWidth || 500;
  const H = 200;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const pts = state.trend;
  if (pts.length < 2) {
    svg.replaceChildren(svgEl('text', { x: 12, y: 24 }, 'Collecting… (a point every 5 s)'));
    return;
  }
  const line = (key, cls) => {
    const max = Math.max(...pts.map((p) => p[key]), 1e-9);
    const d = pts.map((p, i) => `${(i / (pts.length - 1)) * (W - 16) + 8},${H - 12 - (p[key] / max) * (H - 36)}`).join(' ');
    return [svgEl('polyline', { points: d, class: cls }), max];
  };
  const [api, apiMax] = line('api_p95', 'line-api');
  const [queue, qMax] = line('queue', 'line-queue');
  svg.replaceChildren(api, queue,
    svgEl('text', { x: 8, y: 14 }, `API p95 max ${apiMax.toFixed(1)} ms`),
    svgEl('text', { x: W - 8, y: 14, 'text-anchor': 'end' }, `render queue max ${qMax.toFixed(0)}`));
}

async function loadPerformance() {
  try {
    const r = await json(`${API}/performance/report?window=${$('#perf-window').value}`);
    const routes = Object.entries(r.routes);
    const requests = routes.reduce((n, [, s]) => n + s.count, 0);
    const render = r.queues.render ?? { queued: 0, ready: 0, running: 0 };
    const run = r.generations.run;
    const wait = r.generations.queue_wait;
    $('#perf-figures').replaceChildren(
      figure(requests, 'API requests'),
      figure(r.cache_hit_ratio === null ? '—' : `${(r.cache_hit_ratio * 100).toFixed(0)}%`, 'stage cache hit ratio'),
      figure(`${render.ready + render.queued} · ${render.running}`, 'render queue: waiting · running'),
      figure(run.count ? `${(run.p95_ms / 1000).toFixed(2)} s` : '—', `render p95 (${run.count} done)`),
      figure(wait.count ? `${(wait.p50_ms / 1000).toFixed(2)} s` : '—', 'queue wait p50'),
    );
    const rows = routes.map(([name, s]) => {
      const tr = document.createElement('tr');
      for (const v of [name, s.count, `${(s.success_rate * 100).toFixed(1)}%`, fmt(s.p50_ms), fmt(s.p95_ms), fmt(s.p99_ms), fmt(s.max_ms)]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      return tr;
    });
    $('#perf-routes tbody').replaceChildren(...rows);
    const stages = Object.fromEntries(Object.entries(r.stages).filter(([n]) => n !== 'total'));
    drawStages(stages);
    const busiest = routes.reduce((m, [, s]) => Math.max(m, s.p95_ms), 0);
    state.trend.push({ t: Date.now(), api_p95: busiest, queue: render.ready + render.queued + render.running });
    if (state.trend.length > 120) state.trend.shift();
    drawTrend();
  } catch (e) {
    $('#perf-figures').replaceChildren(figure('—', explain(e)));
  }
}

$('#perf-window').addEventListener('change', loadPerformance);

// ---------------------------------------------------------------- batches

const batchForm = $('#batch-form');
const batchState = { id: null, timer: null };

/** Fills the template list from the server (the caller's templates, newest first). */
async function loadTemplates(select = null) {
  const list = batchForm.elements.template;
  try {
    const page = await json(`${API}/templates?limit=200`);
    list.replaceChildren(...page.items.map((t) => {
      const o = document.createElement('option');
      o.value = t.id;
      o.textContent = `${t.name} (${Object.keys(t.fields).join(', ')})`;
      return o;
    }));
    if (!page.items.length) {
      const o = document.createElement('option');
      o.value = '';
      o.textContent = '(no templates yet: save one below)';
      list.append(o);
      $('#batch-new-template').open = true;
    }
    if (select) list.value = select;
  } catch (e) {
    $('.form-error', batchForm).textContent = explain(e);
  }
}

$('#batch-save-template').addEventListener('click', async () => {
  clearErrors(batchForm);
  let template;
  try {
    template = JSON.parse(batchForm.elements.template_json.value);
  } catch (e) {
    batchForm.elements.template_json.classList.add('invalid');
    $('.form-error', batchForm).textContent = `The template is not valid JSON: ${e.message}`;
    return;
  }
  try {
    const t = await json(`${API}/templates`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: batchForm.elements.template_name.value, template }),
    });
    await loadTemplates(t.id);
    $('#batch-new-template').open = false;
  } catch (e) {
    showError(batchForm, e);
  }
});

dropZone($('.drop', batchForm), async (file) => {
  batchForm.elements.csv.value = await file.text();
  $('.drop-hint', batchForm).textContent = `${file.name} ✓`;
});

function showBatch(b) {
  $('#batch-status').hidden = false;
  $('#batch-id').textContent = b.id;
  $('#batch-state').textContent = b.status;
  $('#batch-progress').textContent = `${b.progress}% of ${b.total} rows`;
  $('#batch-bar').value = b.progress;
  $('#batch-counts').textContent = Object.entries(b.counts).map(([k, n]) => `${k}: ${n}`).join(' · ');
  $('#batch-cancel').disabled = b.status !== 'running';
  if (!b.rows) return;
  $('#batch-rows tbody').replaceChildren(...b.rows.map((r) => {
    const tr = document.createElement('tr');
    tr.dataset.status = r.status;
    const cells = [String(r.row), r.status, '', r.error ? r.error.message : ''];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    if (r.generation_id) {
      const a = document.createElement('a');
      a.href = '#';
      a.textContent = r.generation_id;
      a.addEventListener('click', (ev) => { ev.preventDefault(); watch(r.generation_id); });
      tr.children[2].append(a);
    }
    return tr;
  }));
}

async function followBatch(id) {
  clearTimeout(batchState.timer);
  batchState.id = id;
  try {
    const b = await json(`${API}/batches/${id}?limit=100`);
    if (batchState.id !== id) return;
    showBatch(b);
    const busy = ['pending', 'queued', 'running'].some((k) => (b.counts[k] ?? 0) > 0);
    if (b.status === 'running' || busy) batchState.timer = setTimeout(() => followBatch(id), 1000);
    else loadHistory();
  } catch (e) {
    $('.form-error', batchForm).textContent = explain(e);
  }
}

batchForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors(batchForm);
  const template = batchForm.elements.template.value;
  if (!template) {
    fieldError(batchForm, 'template', '');
    $('.form-error', batchForm).textContent = 'Pick a template, or save one first.';
    return;
  }
  const button = $('button[type=submit]', batchForm);
  button.disabled = true;
  try {
    const b = await json(`${API}/batches`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ template, csv: batchForm.elements.csv.value }),
    });
    if (b.invalid_rows?.length) {
      const list = $('.issues', batchForm);
      for (const r of b.invalid_rows) {
        const li = document.createElement('li');
        li.textContent = `row ${r.row}: ${r.error.message}`;
        list.append(li);
      }
    }
    followBatch(b.id);
  } catch (e) {
    showError(batchForm, e);
  } finally {
    button.disabled = false;
  }
});

$('#batch-cancel').addEventListener('click', async () => {
  if (!batchState.id) return;
  try {
    showBatch(await json(`${API}/batches/${batchState.id}/cancel`, { method: 'POST' }));
  } catch (e) {
    $('.form-error', batchForm).textContent = explain(e);
  }
});

$('#batch-manifest').addEventListener('click', async () => {
  if (!batchState.id) return;
  try {
    const blob = await (await api(`${API}/batches/${batchState.id}/manifest?format=csv`)).blob();
    const a = document.createElement('a');
    a.href = remember(URL.createObjectURL(blob));
    a.download = `${batchState.id}.csv`;
    a.click();
  } catch (e) {
    $('.form-error', batchForm).textContent = explain(e);
  }
});

// ---------------------------------------------------------------- start

function selectTab(name) {
  $$('.tabs button').forEach((b) => b.setAttribute('aria-selected', String(b.dataset.tab === name)));
  $$('[data-panel]').forEach((p) => { p.hidden = p.dataset.panel !== name; });
}
$$('.tabs button').forEach((b) => b.addEventListener('click', () => {
  selectTab(b.dataset.tab);
  if (b.dataset.tab === 'batch') loadTemplates(batchForm.elements.template.value || null);
}));

const keyInput = $('#api-key');
keyInput.value = state.key;
keyInput.addEventListener('change', () => {
  state.key = keyInput.value.trim();
  if (state.key) localStorage.setItem('reelsmith.key', state.key);
  else localStorage.removeItem('reelsmith.key');
  loadHistory();
  loadPerformance();
});

promptMode();
addScene('Welcome to Reelsmith. This video was made from a form.', '#1e3c72');
addScene('Change a sentence, and only that scene renders again.', '#7a1f3d');
jsonForm.elements.spec.value = JSON.stringify(EXAMPLE, null, 2);
loadHistory();
loadPerformance();
setInterval(loadPerformance, 5000);
document.body.dataset.ready = 'true';
