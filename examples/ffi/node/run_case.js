// A Node.js host of the ACE-Step C-ABI library: onnxruntime-node runs the five graphs, libacestep_runtime (through
// koffi) does everything else. Runs one text2music case end to end, writes the first item as a WAV file and every
// capture point as .npy files (the names of the Python runtime's captures).
//
//   node run_case.js LIBACESTEP_RUNTIME ONNX_DIR CASE_JSON OUT_DIR
//
// Wrong arguments: a usage line and exit status 2; a failed call: its message and exit status 1 (README.md).
'use strict';

const fs = require('fs');
const path = require('path');

const USAGE = 'usage: node run_case.js LIBACESTEP_RUNTIME ONNX_DIR CASE_JSON OUT_DIR';
if (process.argv.length !== 6) {
  console.error(USAGE);
  process.exit(2);
}
// after the usage check: without `npm ci` (README.md) these fail with MODULE_NOT_FOUND
const koffi = require('koffi');
const ort = require('onnxruntime-node');

function loadLibrary(file) {
  const lib = koffi.load(file);
  const f = (sig) => lib.func(sig);
  return {
    abi: f('uint32_t ace_abi_version()'),
    version: f('void *ace_version_string()'),
    lastError: f('void *ace_last_error()'),
    free: f('void ace_string_free(void *s)'),
    create: f('void *ace_create_context(const char *config_json)'),
    destroy: f('void ace_free_context(void *ctx)'),
    prepare: f('int32_t ace_prepare_request(void *ctx, const char *case_json, _Out_ void **out_json)'),
    noise: f('int32_t ace_noise(void *ctx, const uint64_t *seeds, size_t n, size_t frames, _Out_ float *out, size_t len)'),
    contextLatents: f('int32_t ace_context_latents(void *ctx, size_t frames, size_t batch, _Out_ float *out, size_t len)'),
    timbre: f('int32_t ace_timbre_reference(void *ctx, size_t batch, _Out_ float *out, size_t len)'),
    stepInputs: f('int32_t ace_prepare_step_inputs(void *ctx, const char *state, _Out_ float *t, size_t len, _Out_ void **out_json)'),
    step: f('int32_t ace_scheduler_step(void *ctx, const float *xt, const float *vt, size_t len, double dt, _Out_ float *out)'),
    tileWindow: f('int32_t ace_tile_window(void *ctx, const float *lat, size_t len, size_t batch, size_t frames, size_t item, size_t tile, _Out_ float *out, size_t out_len)'),
    tileTrim: f('int32_t ace_tile_trim(void *ctx, size_t frames, size_t tile, size_t decoded, _Out_ size_t *start, _Out_ size_t *end)'),
    post: f('int32_t ace_postprocess_audio(void *ctx, const float *audio, size_t len, size_t batch, _Out_ float *out)'),
    jsonI64: f('int32_t ace_json_i64(const char *json, const char *path, _Out_ int64_t *out, size_t cap, _Out_ size_t *count)'),
    wav: f('int32_t ace_write_wav(void *ctx, const char *path, const float *audio, size_t len, size_t channels)'),
  };
}

// Copy a library-owned string and free it (every char * the library returns is the caller's to free).
function takeString(lib, ptr) {
  if (!ptr) return null;
  const text = koffi.decode(ptr, 'char', -1);
  lib.free(ptr);
  return text;
}

function check(lib, call, status) {
  if (status !== 0) throw new Error(`${call} failed (${status}): ${takeString(lib, lib.lastError())}`);
}

function callJson(lib, name, ...args) {
  const out = [null];
  check(lib, name, lib[name](...args, out));
  return JSON.parse(takeString(lib, out[0]));
}

function writeNpy(dir, name, descr, typed, shape) {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  const pad = (64 - ((10 + header.length + 1) % 64)) % 64;
  header += ' '.repeat(pad) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
  fs.writeFileSync(path.join(dir, `${name}.npy`), Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
}

const prod = (shape) => shape.reduce((a, b) => a * b, 1);

async function main() {
  const [libPath, onnxDir, casePath, outDir] = process.argv.slice(2);
  const lib = loadLibrary(libPath);
  if (lib.abi() !== 1) throw new Error('library ABI is not 1');
  const ctx = lib.create(JSON.stringify({ onnx_dir: onnxDir }));
  if (!ctx) throw new Error(`ace_create_context: ${takeString(lib, lib.lastError())}`);
  const caseText = fs.readFileSync(casePath, 'utf8');
  const caseJson = JSON.parse(caseText);
  const out0 = [null];
  check(lib, 'ace_prepare_request', lib.prepare(ctx, caseText, out0));
  const reqText = takeString(lib, out0[0]);
  const req = JSON.parse(reqText);
  // seeds may exceed 2^53 (JSON.parse would round them): read them as int64 through the library
  const seeds = new BigInt64Array(req.batch);
  check(lib, 'ace_json_i64', lib.jsonI64(reqText, 'seeds', seeds, seeds.length, [0]));

  // the options of the Python runtime: same threads, optimization level and execution mode
  const threads = parseInt(process.env.ACESTEP_ORT_THREADS || '0', 10);
  const options = { executionProviders: ['cpu'], graphOptimizationLevel: 'all', executionMode: 'sequential',
    intraOpNumThreads: threads, interOpNumThreads: 1, logSeverityLevel: 3 };
  const graphs = {};
  for (const g of ['text_encoder', 'lyric_embedding', 'condition_encoder', 'dit_decoder', 'vae_decoder']) {
    graphs[g] = await ort.InferenceSession.create(path.join(onnxDir, `${g}.onnx`), options);
  }
  const caps = {};
  const B = req.batch;
  const T = req.latent_frames;
  const i64 = (t) => BigInt64Array.from(t.data.map((x) => BigInt(x)));
  const bool = (t) => Uint8Array.from(t.data);
  caps.text_token_ids = [i64(req.text_token_ids), req.text_token_ids.shape, '<i8'];
  caps.text_attention_mask = [bool(req.text_attention_mask), req.text_attention_mask.shape, '|b1'];
  caps.lyric_token_ids = [i64(req.lyric_token_ids), req.lyric_token_ids.shape, '<i8'];
  caps.lyric_attention_mask = [bool(req.lyric_attention_mask), req.lyric_attention_mask.shape, '|b1'];

  const run1 = async (g, feeds) => graphs[g].run(feeds);
  const tensor = (type, data, shape) => new ort.Tensor(type, data, shape);
  let out = await run1('text_encoder', { input_ids: tensor('int64', caps.text_token_ids[0], req.text_token_ids.shape) });
  const textH = out[graphs.text_encoder.outputNames[0]];
  caps.text_hidden_states = [textH.data, textH.dims, '<f4'];
  out = await run1('lyric_embedding', { input_ids: tensor('int64', caps.lyric_token_ids[0], req.lyric_token_ids.shape) });
  const lyricH = out[graphs.lyric_embedding.outputNames[0]];
  caps.lyric_hidden_states = [lyricH.data, lyricH.dims, '<f4'];

  // masks as the dtype the graph declares (bool, int64 or float)
  const meta = graphs.condition_encoder.inputMetadata;
  const maskAs = (name, mask, shape) => {
    const m = Array.isArray(meta) ? meta.find((x) => x.name === name) : undefined;
    const type = m && m.type ? m.type : 'bool';
    if (type === 'int64') return tensor('int64', BigInt64Array.from(mask, (x) => BigInt(x)), shape);
    if (type === 'float32') return tensor('float32', Float32Array.from(mask), shape);
    return tensor('bool', mask, shape);
  };
  const timbre = new Float32Array(prod(req.timbre_reference_shape));
  check(lib, 'ace_timbre_reference', lib.timbre(ctx, B, timbre, timbre.length));
  out = await run1('condition_encoder', {
    text_hidden_states: textH,
    text_attention_mask: maskAs('text_attention_mask', caps.text_attention_mask[0], req.text_attention_mask.shape),
    lyric_hidden_states: lyricH,
    lyric_attention_mask: maskAs('lyric_attention_mask', caps.lyric_attention_mask[0], req.lyric_attention_mask.shape),
    timbre_reference: tensor('float32', timbre, req.timbre_reference_shape),
  });
  const [encName, maskName] = graphs.condition_encoder.outputNames;
  const enc = out[encName];
  caps.encoder_hidden_states = [enc.data, enc.dims, '<f4'];
  caps.encoder_attention_mask = [Uint8Array.from(out[maskName].data, (x) => (Number(x) !== 0 ? 1 : 0)),
    out[maskName].dims, '|b1'];

  const ctxLat = new Float32Array(prod(req.context_latents_shape));
  check(lib, 'ace_context_latents', lib.contextLatents(ctx, T, B, ctxLat, ctxLat.length));
  caps.context_latents = [ctxLat, req.context_latents_shape, '<f4'];
  caps.schedule = [Float32Array.from(req.schedule), [req.steps], '<f4'];
  const n = B * T * 64;
  let xt = new Float32Array(n);
  check(lib, 'ace_noise', lib.noise(ctx, new BigUint64Array(seeds.buffer), seeds.length, T, xt, n));
  caps.noise = [xt.slice(), req.noise_shape, '<f4'];

  const xs = new Float32Array(req.steps * n);
  const vs = new Float32Array(req.steps * n);
  const state = { shift: caseJson.shift === undefined ? 1.0 : caseJson.shift, timesteps: caseJson.timesteps ?? null };
  const ctxTensor = tensor('float32', ctxLat, req.context_latents_shape);
  for (let i = 0; i < req.steps; i++) {
    const t = new Float32Array(B);
    const info = callJson(lib, 'stepInputs', ctx, JSON.stringify({ ...state, step: i }), t, B);
    xs.set(xt, i * n);
    out = await run1('dit_decoder', {
      hidden_states: tensor('float32', xt, req.noise_shape), timestep: tensor('float32', t, [B]),
      timestep_r: tensor('float32', t, [B]), encoder_hidden_states: enc, context_latents: ctxTensor,
    });
    const vt = out[graphs.dit_decoder.outputNames[0]].data;
    vs.set(vt, i * n);
    const next = new Float32Array(n);
    check(lib, 'ace_scheduler_step', lib.step(ctx, xt, vt, n, info.dt, next));
    xt = next;
  }
  caps.xt = [xs, [req.steps, ...req.noise_shape], '<f4'];
  caps.vt = [vs, [req.steps, ...req.noise_shape], '<f4'];
  caps.pred_latents = [xt, req.noise_shape, '<f4'];

  // tiled VAE decode: windows and trims from the library
  const items = [];
  let channels = 0;
  for (let b = 0; b < B; b++) {
    const pieces = [];
    for (let k = 0; k < req.n_tiles; k++) {
      const tile = req.tiles[k];
      const width = tile.win_end - tile.win_start;
      const win = new Float32Array(64 * width);
      check(lib, 'ace_tile_window', lib.tileWindow(ctx, xt, n, B, T, b, k, win, win.length));
      out = await run1('vae_decoder', { latents: tensor('float32', win, [1, 64, width]) });
      const dec = out[graphs.vae_decoder.outputNames[0]];
      channels = dec.dims[1];
      const len = dec.dims[2];
      const start = [0];
      const end = [0];
      check(lib, 'ace_tile_trim', lib.tileTrim(ctx, T, k, len, start, end));
      pieces.push({ data: dec.data, len, start: Number(start[0]), end: Number(end[0]) });
    }
    items.push(pieces);
  }
  const samples = items[0].reduce((a, p) => a + p.end - p.start, 0);
  const decoded = new Float32Array(B * channels * samples);
  items.forEach((pieces, b) => {
    for (let c = 0; c < channels; c++) {
      let at = (b * channels + c) * samples;
      for (const p of pieces) {
        decoded.set(p.data.subarray(c * p.len + p.start, c * p.len + p.end), at);
        at += p.end - p.start;
      }
    }
  });
  caps.audio_decoded = [decoded, [B, channels, samples], '<f4'];
  const audio = new Float32Array(decoded.length);
  check(lib, 'ace_postprocess_audio', lib.post(ctx, decoded, decoded.length, B, audio));
  caps.audio = [audio, [B, channels, samples], '<f4'];

  fs.mkdirSync(outDir, { recursive: true });
  for (const [name, [data, shape, descr]] of Object.entries(caps)) writeNpy(outDir, name, descr, data, shape);
  check(lib, 'ace_write_wav', lib.wav(ctx, path.join(outDir, 'out.wav'), audio, channels * samples, channels));
  console.log(JSON.stringify({ library: takeString(lib, lib.version()), case: req.id, batch: B, frames: T,
    steps: req.steps, samples, ort: ort.env.versions }));
  lib.destroy(ctx);
}

main().catch((err) => {
  console.error(`run_case.js: ${err.stack || err}`);
  process.exit(1);
});
