// Drives the Studio page of a running `reelsmith serve` in Debian's headless Chromium.
// Usage: STUDIO_URL=http://127.0.0.1:PORT STUDIO_IMAGE=/path/pic.png node studio.test.mjs
// Run by crates/cli/tests/service (studio_page_in_headless_chromium), which starts the server.
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.STUDIO_URL;
const image = process.env.STUDIO_IMAGE;
// STUDIO_PHOTO: a portrait with a face, for the talking-photo form.
const shots = process.env.STUDIO_SCREENSHOTS; // optional folder for screenshots
assert.ok(url && image, 'set STUDIO_URL and STUDIO_IMAGE');

const profile = mkdtempSync(join(tmpdir(), 'studio-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  viewport: { width: 1400, height: 1000 },
});
const page = context.pages()[0] ?? (await context.newPage());
const problems = [];
page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
page.on('console', (m) => {
  // A refused request (4xx) is logged by Chromium itself and is expected in the error tests.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
});
const step = (name) => console.log(`ok - ${name}`);
const T = 120_000;

try {
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]');
  step('page loads with its script and style (CSP allows them)');

  // ---- A two-scene storyboard through the form, the first picture dropped onto its scene.
  await page.selectOption('#storyboard-form select[name=size]', '320x180');
  await page.selectOption('#storyboard-form select[name=voice]', 'espeak-ng');
  const scenes = page.locator('#scenes > li');
  assert.equal(await scenes.count(), 2, 'the form starts with two scenes');
  await scenes.nth(0).locator('.narration').fill('A picture dropped on the page.');
  await scenes.nth(1).locator('.narration').fill('And a colour card after it.');
  const png = readFileSync(image).toString('base64');
  await page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
    const zone = document.querySelector('#scenes > li .drop');
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, png);
  await page.waitForFunction(() => document.querySelector('#scenes > li .drop').dataset.ref?.startsWith('asset:'), null, { timeout: T });
  assert.ok(await scenes.nth(0).locator('.drop img').isVisible(), 'the dropped picture is shown');
  step('drag and drop uploads the picture as an asset');

  await page.click('#storyboard-form button[type=submit]');
  await page.waitForSelector('#watch:not([hidden])');
  const id = (await page.textContent('#watch-id')).trim();
  assert.match(id, /^gen_/);
  // Progress as the person sees it, sampled until the end.
  const seen = await page.evaluate(async (limit) => {
    const values = [];
    const t0 = performance.now();
    while (performance.now() - t0 < limit) {
      const v = Number(document.querySelector('#watch-progress').value);
      if (values[values.length - 1] !== v) values.push(v);
      const status = document.querySelector('#watch-status').textContent;
      if (status === 'succeeded' || status === 'failed') return { values, status };
      await new Promise((r) => setTimeout(r, 20));
    }
    return { values, status: 'timeout' };
  }, T);
  assert.equal(seen.status, 'succeeded', `render ended ${seen.status}: ${await page.textContent('#watch-error')}`);
  assert.equal(seen.values[seen.values.length - 1], 100, `progress ends at 100%: ${seen.values}`);
  assert.ok(seen.values.every((v, i) => i === 0 || v >= seen.values[i - 1]), `progress never goes back: ${seen.values}`);
  assert.equal((await page.textContent('#watch-percent')).trim(), '100%');
  const stages = await page.locator('#watch-stages li').allTextContents();
  assert.ok(stages.length >= 1 && stages.every((s) => s.includes('✓')), `stages shown and done: ${stages}`);
  step(`live progress reached 100% (${seen.values.length} distinct values; stages: ${stages.join(', ')})`);

  await page.waitForSelector('#result:not([hidden])', { timeout: T });
  const played = await page.evaluate(async () => {
    const v = document.querySelector('#player');
    v.muted = true;
    await v.play();
    const t0 = performance.now();
    while (v.currentTime < 0.5 && performance.now() - t0 < 20000) await new Promise((r) => setTimeout(r, 50));
    const track = v.textTracks[0];
    if (track) track.mode = 'hidden';
    const t1 = performance.now();
    while (track && !(track.cues?.length) && performance.now() - t1 < 5000) await new Promise((r) => setTimeout(r, 50));
    return { currentTime: v.currentTime, duration: v.duration, width: v.videoWidth, height: v.videoHeight,
      error: v.error?.code ?? null, cues: track?.cues?.length ?? 0 };
  });
  assert.equal(played.error, null, 'the video decodes');
  assert.ok(played.currentTime >= 0.5, `the video plays: currentTime ${played.currentTime}`);
  assert.deepEqual([played.width, played.height], [320, 180]);
  assert.ok(played.duration > 2 && played.duration < 30, `duration ${played.duration}`);
  assert.ok(played.cues > 0, 'the subtitles track has cues');
  // The live stream played in the page while it rendered: every piece appended, then the MP4 took over.
  await page.waitForFunction(() => document.querySelector('#live-player').dataset.ended === 'true'
    || document.querySelector('#live-player').dataset.error, null, { timeout: 30_000 });
  const streamed = await page.evaluate(() => {
    const v = document.querySelector('#live-player');
    return { pieces: Number(v.dataset.pieces), error: v.dataset.error ?? null, player: v.dataset.player, width: v.videoWidth, height: v.videoHeight,
      buffered: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0, mediaError: v.error?.code ?? null,
      hidden: document.querySelector('#live').hidden };
  });
  assert.equal(streamed.error, null, `live stream: ${streamed.error}`);
  assert.equal(streamed.mediaError, null, 'the live pieces decode');
  assert.equal(streamed.player, 'hls.js', 'the Studio plays the live stream with hls.js');
  assert.ok(streamed.pieces >= 2, `live pieces appended: ${streamed.pieces}`);
  assert.deepEqual([streamed.width, streamed.height], [320, 180]);
  assert.ok(Math.abs(streamed.buffered - played.duration) < 0.25, `live stream covers the video: ${streamed.buffered} vs ${played.duration}`);
  assert.ok(streamed.hidden, 'the finished MP4 replaces the live player');
  step(`live stream: ${streamed.pieces} pieces, ${streamed.buffered.toFixed(2)} s buffered by hls.js`);

  // hls.js on its own over the same stream, now ended: it plays across the first piece
  // boundary, and sound and pictures run without a gap from the first frame to the last (a
  // muxed SourceBuffer's range is where both tracks are buffered).
  const replay = await page.evaluate(async (id) => {
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const Hls = (await import('/hls.light.min.mjs')).default;
    const v = document.createElement('video');
    v.muted = true;
    document.body.append(v);
    const hls = new Hls({ enableWorker: false, startPosition: 0 });
    const pieces = [];
    let failed = null;
    let ended = false;
    const buffers = new Set();
    hls.on(Hls.Events.BUFFER_CREATED, (_, d) => Object.keys(d.tracks).forEach((t) => buffers.add(t)));
    hls.on(Hls.Events.FRAG_BUFFERED, (_, d) => pieces.push([d.frag.start, d.frag.duration]));
    hls.on(Hls.Events.BUFFER_EOS, () => { ended = true; });
    hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) failed = d.details; });
    hls.attachMedia(v);
    hls.loadSource(`/api/v1/generations/${id}/stream.m3u8`);
    const t0 = performance.now();
    while (!ended && !failed && performance.now() - t0 < 20_000) await sleep(50);
    if (!failed) await v.play();
    const boundary = pieces.length ? pieces[0][0] + pieces[0][1] : Infinity;
    while (v.currentTime < boundary + 0.3 && !failed && !v.ended && performance.now() - t0 < 40_000) await sleep(50);
    const ranges = Array.from({ length: v.buffered.length }, (_, i) => [v.buffered.start(i), v.buffered.end(i)]);
    const out = { failed, pieces, boundary, currentTime: v.currentTime, ranges, buffers: [...buffers],
      frames: v.getVideoPlaybackQuality().totalVideoFrames, mediaError: v.error?.code ?? null };
    hls.destroy();
    v.remove();
    return out;
  }, id);
  assert.equal(replay.failed, null, `hls.js: ${replay.failed}`);
  assert.equal(replay.mediaError, null, 'hls.js pieces decode');
  assert.ok(replay.pieces.length >= 2, `hls.js buffered ${replay.pieces.length} pieces`);
  assert.ok(replay.currentTime > replay.boundary, `plays past the first piece (${replay.currentTime} > ${replay.boundary})`);
  assert.ok(replay.buffers.includes('audiovideo') || (replay.buffers.includes('audio') && replay.buffers.includes('video')),
    `sound and pictures buffered: ${replay.buffers}`);
  assert.equal(replay.ranges.length, 1, `one gap-free range of sound and pictures: ${JSON.stringify(replay.ranges)}`);
  assert.ok(replay.ranges[0][0] < 0.05 && Math.abs(replay.ranges[0][1] - played.duration) < 0.25,
    `the range covers the video: ${JSON.stringify(replay.ranges)} vs ${played.duration}`);
  step(`hls.js plays the stream across its pieces (${replay.pieces.length} pieces, ${replay.buffers}, t=${replay.currentTime.toFixed(2)} s)`);
  const profileRows = await page.locator('#profile-stages tbody tr').count();
  assert.ok(profileRows >= 3, `the render's profile lists its stages (${profileRows})`);
  step(`video plays (t=${played.currentTime.toFixed(2)} of ${played.duration.toFixed(2)} s, ${played.cues} subtitle cues, ${profileRows} stage rows)`);

  const item = page.locator(`#history-list li[data-id="${id}"]`);
  await item.waitFor({ timeout: T });
  await page.waitForFunction((gid) => document.querySelector(`#history-list li[data-id="${gid}"]`)?.dataset.status === 'succeeded', id);
  await page.waitForFunction((gid) => document.querySelector(`#history-list li[data-id="${gid}"] img.thumb`)?.naturalWidth > 0, id);
  assert.match(await item.textContent(), /succeeded/);
  assert.match(await item.textContent(), /s · 320×180/);
  step('the list shows the generation with its thumbnail, status and duration');
  if (shots) await page.screenshot({ path: join(shots, 'studio-result.png'), fullPage: true });

  await page.click('#edit-spec');
  await page.waitForFunction(() => document.querySelector('#json-form textarea').value.includes('"asset:'));
  const edited = JSON.parse(await page.inputValue('#json-form textarea[name=spec]'));
  assert.equal(edited.scenes.length, 2);
  assert.equal(edited.output.width, 320);
  await page.click('#tab-storyboard');
  step('"Edit as JSON" loads the stored spec, files as asset references');

  // ---- Bad input shown to the person, next to the field at fault.
  await scenes.nth(1).locator('.narration').fill('   ');
  await page.click('#storyboard-form button[type=submit]');
  const fieldError = scenes.nth(1).locator('.field-error[data-error-for="scenes[1].narration"]');
  await page.waitForFunction(() => document.querySelector('#scenes > li:nth-child(2) .field-error[data-error-for="scenes[1].narration"]').textContent.length > 0);
  assert.match(await fieldError.textContent(), /empty/);
  assert.ok(await scenes.nth(1).locator('.narration').evaluate((el) => el.classList.contains('invalid')), 'the field is marked');
  assert.equal(await page.locator('#watch-id').textContent(), id, 'no new generation was started');
  step(`a bad scene shows "${(await fieldError.textContent()).trim()}" under that scene's narration`);

  await page.click('#tab-json');
  await page.fill('#json-form textarea[name=spec]', '{"version": 1, "scenes": [');
  await page.click('#json-form button[type=submit]');
  await page.waitForSelector('#json-form .form-error:not(:empty)');
  assert.match(await page.textContent('#json-form .form-error'), /not valid JSON/);
  await page.fill('#json-form textarea[name=spec]', JSON.stringify({
    version: 1, output: { width: 320, height: 180 },
    scenes: [{ narration: { text: 'hi' }, motion: { type: 'ken-burns', zoom_to: 9 } }],
  }));
  await page.click('#json-form button[type=submit]');
  await page.waitForSelector('#json-form .issues li');
  const issues = await page.locator('#json-form .issues li').allTextContents();
  assert.ok(issues.some((t) => t.includes('scenes[0].motion')), `issues name the field: ${issues}`);
  assert.match(await page.textContent('#json-form .form-error'), /invalid spec/);
  step(`the JSON editor shows parse errors and the server's issues (${issues[0]})`);

  await page.click('#tab-talking');
  await page.click('#talking-form button[type=submit]');
  assert.match(await page.textContent('#talking-form [data-error-for="scenes[0].image"]'), /photo/);
  step('the talking-photo form asks for a photo before submitting');

  // ---- A talking photo: a square headshot with a blurred background.
  await page.setInputFiles('#talking-form input[name=photo]', process.env.STUDIO_PHOTO);
  await page.waitForFunction(() => document.querySelector('#talking-form .drop').dataset.ref?.startsWith('asset:'), null, { timeout: T });
  await page.fill('#talking-form textarea[name=script]', 'Hello from a photo in the browser.');
  await page.selectOption('#talking-form select[name=voice]', 'espeak-ng');
  await page.selectOption('#talking-form select[name=framing]', 'square');
  await page.selectOption('#talking-form select[name=background]', 'blur');
  await page.click('#talking-form button[type=submit]');
  await page.waitForFunction((first) => document.querySelector('#watch-id').textContent.trim() !== first, id);
  await page.waitForFunction(() => ['succeeded', 'failed'].includes(document.querySelector('#watch-status').textContent), null, { timeout: T });
  assert.equal(await page.textContent('#watch-status'), 'succeeded', await page.textContent('#watch-error'));
  await page.waitForSelector('#result:not([hidden])', { timeout: T });
  const talk = await page.evaluate(async () => {
    const v = document.querySelector('#player');
    if (v.readyState < 1) await new Promise((r) => v.addEventListener('loadedmetadata', r, { once: true }));
    return { w: v.videoWidth, h: v.videoHeight };
  });
  assert.equal(talk.w, talk.h, `a square headshot: ${talk.w}x${talk.h}`);
  step(`a talking photo rendered as a ${talk.w}x${talk.h} headshot with a blurred background`);

  // ---- From a prompt: an article narrated as written, planned by the job, shown as a plan.
  await page.click('#tab-prompt');
  await page.selectOption('#prompt-form select[name=mode]', 'text');
  await page.fill('#prompt-form textarea[name=words]', '   ');
  await page.click('#prompt-form button[type=submit]');
  await page.waitForSelector('#prompt-form [data-error-for="prompt.text"]:not(:empty)');
  assert.match(await page.textContent('#prompt-form [data-error-for="prompt.text"]'), /nothing to narrate/);
  step('an empty text is refused next to the field');
  const article = 'Lava pours from the crater.\n\nPenguins waddle across the snow.';
  await page.fill('#prompt-form textarea[name=words]', article);
  await page.selectOption('#prompt-form select[name=size]', '320x180');
  await page.selectOption('#prompt-form select[name=voice]', 'espeak-ng');
  await page.selectOption('#prompt-form select[name=visuals]', 'cards');
  const before = (await page.textContent('#watch-id')).trim();
  await page.click('#prompt-form button[type=submit]');
  await page.waitForFunction((prev) => document.querySelector('#watch-id').textContent.trim() !== prev, before);
  await page.waitForFunction(() => ['succeeded', 'failed'].includes(document.querySelector('#watch-status').textContent), null, { timeout: T });
  assert.equal(await page.textContent('#watch-status'), 'succeeded', await page.textContent('#watch-error'));
  await page.waitForSelector('#plan:not([hidden])', { timeout: T });
  const planRows = await page.locator('#plan-scenes tbody tr').allTextContents();
  assert.equal(planRows.length, 2, `two scenes planned: ${planRows}`);
  assert.match(planRows[0], /Lava pours from the crater\./);
  assert.match(planRows[1], /card/);
  await page.waitForSelector('#profile-ledger:not([hidden])');
  assert.match(await page.textContent('#profile-ledger tbody'), /no provider calls/);
  const planStages = await page.locator('#watch-stages li').allTextContents();
  step(`a prompt planned and rendered (${planRows.length} scenes; stages: ${planStages.join(', ')}); the ledger shows no paid calls`);
  await page.click('#edit-form');
  await page.waitForFunction(() => document.querySelectorAll('#scenes > li').length === 2 && !document.querySelector('#storyboard-form').hidden);
  assert.equal(await scenes.nth(1).locator('.narration').inputValue(), 'Penguins waddle across the snow.');
  step('"Edit in the form" puts the planned scenes into the storyboard form');

  // ---- Batch: a template saved from the page, rows pasted as CSV, one bad row reported, the
  // rows followed to the end, the manifest downloaded.
  await page.click('#tab-batch');
  await page.waitForSelector('#batch-new-template[open]');
  const cardTemplate = {
    fields: { NAME: { type: 'string', max_length: 20 }, BRAND: { type: 'color', default: '#2040c0' } },
    version: 1,
    output: { width: 160, height: 96, fps: 10 },
    scenes: [{ duration: 1.0, background: { color: '{{ BRAND }}' }, title: 'Hi {{ NAME }}' }],
  };
  await page.fill('#batch-form input[name=template_name]', 'Cards');
  await page.fill('#batch-form textarea[name=template_json]', '{"fields": {"NAME": {"type": "string"}}, "version": 1, "scenes": [{"title": "{{ NICK }}"}]}');
  await page.click('#batch-save-template');
  await page.waitForFunction(() => document.querySelector('#batch-form .issues').textContent.includes('NICK'));
  step('a template whose placeholder is not a field is refused, named in the page');
  await page.fill('#batch-form textarea[name=template_json]', JSON.stringify(cardTemplate));
  await page.click('#batch-save-template');
  await page.waitForFunction(() => document.querySelector('#batch-form select[name=template]').value.startsWith('tpl_'));
  await page.fill('#batch-form textarea[name=csv]', 'NAME,BRAND\nAda,#ff0000\nA name far too long for the card,\nGrace,\n');
  await page.click('#batch-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#batch-state').textContent === 'completed'
    && document.querySelectorAll('#batch-rows tbody tr').length === 3, null, { timeout: T });
  const batchRows = await page.locator('#batch-rows tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.status));
  assert.deepEqual(batchRows, ['succeeded', 'invalid', 'succeeded']);
  assert.match(await page.textContent('#batch-form .issues'), /row 1: merge\.NAME/);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#batch-manifest')]);
  const manifest = readFileSync(await download.path(), 'utf8').trim().split('\n');
  assert.equal(manifest.length, 4, manifest.join('\n'));
  assert.match(manifest[2], /^1,invalid,/);
  step(`a batch from a pasted CSV: rows ${batchRows.join(', ')}; the manifest downloaded (${manifest.length - 1} rows)`);
  if (shots) await page.screenshot({ path: join(shots, 'studio-batch.png'), fullPage: true });

  // ---- Performance panel: figures, route table and stage chart from the server's report.
  await page.waitForFunction(() => {
    const rows = document.querySelectorAll('#perf-routes tbody tr').length;
    const rects = document.querySelectorAll('#chart-stages rect').length;
    const cache = [...document.querySelectorAll('#perf-figures .figure')].find((f) => f.textContent.includes('cache hit'));
    return rows > 0 && rects > 0 && cache && !cache.textContent.startsWith('—');
  }, null, { timeout: 20000 });
  const figures = await page.locator('#perf-figures .figure').allTextContents();
  const requests = Number((await page.locator('#perf-figures .figure b').first().textContent()).trim());
  assert.ok(requests > 0, `API requests counted: ${figures}`);
  const routes = await page.locator('#perf-routes tbody tr td:first-child').allTextContents();
  assert.ok(routes.some((r) => r.startsWith('POST /api/v1/generations')), `routes: ${routes}`);
  step(`the performance panel shows figures (${figures.join(' | ')}) and ${routes.length} routes`);
  if (shots) await page.screenshot({ path: join(shots, 'studio-errors-and-performance.png'), fullPage: true });

  assert.deepEqual(problems, [], 'no script errors or CSP violations');
  step('no script errors');
} catch (e) {
  if (shots) await page.screenshot({ path: join(shots, 'studio-failure.png'), fullPage: true }).catch(() => {});
  console.error(`not ok - ${e.stack ?? e}`);
  if (problems.length) console.error(`page problems:\n  ${problems.join('\n  ')}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
