/*
 * A C host of the ACE-Step C-ABI library: ONNX Runtime through its C API (the pip wheel's libonnxruntime,
 * loaded by path), every other step through libacestep_runtime. Runs one text2music case end to end and
 * writes every capture point as .npy files (the names of the Python runtime's captures) and the first item
 * as a WAV file.
 *
 *   run_case ONNX_DIR CASE_JSON LIBONNXRUNTIME OUT_DIR
 *
 * OUT_DIR is created if missing (not its parents). Wrong arguments: a usage line and exit status 2; a failed
 * call: its message and exit status 1. Build with the Makefile beside this file (`make`, `make run`; README.md):
 * onnxruntime_c_api.h comes from the Go module github.com/yalue/onnxruntime_go@v1.27.0 (`go mod download`),
 * never from a committed copy.
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

#include "acestep_runtime.h"
#include "onnxruntime_c_api.h"

#define ORT_API_WANTED 23 /* onnxruntime 1.23 */
#define MAX_DIMS 8

static const OrtApi *ort;
static const AceContext *ctx;

static void die(const char *what) {
  fprintf(stderr, "run_case: %s\n", what);
  exit(1);
}

static void ace_check(AceStatus status, const char *call) {
  if (status == ACE_STATUS_OK) return;
  char *err = ace_last_error();
  fprintf(stderr, "run_case: %s failed (%d): %s\n", call, (int)status, err ? err : "?");
  ace_string_free(err);
  exit(1);
}

static void ort_check(OrtStatus *status, const char *call) {
  if (!status) return;
  fprintf(stderr, "run_case: %s: %s\n", call, ort->GetErrorMessage(status));
  ort->ReleaseStatus(status);
  exit(1);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory");
  return p;
}

/* ---- reading the request JSON through the library (no JSON parser needed here) ---- */
static int64_t *json_i64s(const char *json, const char *path, size_t *count) {
  ace_check(ace_json_i64(json, path, NULL, 0, count), "ace_json_i64 (size)");
  int64_t *out = xmalloc(*count * sizeof(int64_t));
  ace_check(ace_json_i64(json, path, out, *count, count), path);
  return out;
}
static int64_t json_int(const char *json, const char *path) {
  size_t n;
  int64_t v;
  ace_check(ace_json_i64(json, path, &v, 1, &n), path);
  return v;
}
static double *json_f64s(const char *json, const char *path, size_t *count) {
  ace_check(ace_json_f64(json, path, NULL, 0, count), "ace_json_f64 (size)");
  double *out = xmalloc(*count * sizeof(double));
  ace_check(ace_json_f64(json, path, out, *count, count), path);
  return out;
}

/* ---- .npy writer ---- */
static void write_npy(const char *dir, const char *name, const char *descr, size_t itemsize, const void *data,
                      const int64_t *shape, size_t ndim) {
  char path[4096], header[512], dims[256] = "";
  snprintf(path, sizeof path, "%s/%s.npy", dir, name);
  size_t count = 1;
  for (size_t i = 0; i < ndim; i++) {
    char d[32];
    snprintf(d, sizeof d, "%lld,%s", (long long)shape[i], (ndim > 1 && i + 1 < ndim) ? " " : "");
    strcat(dims, d);
    count *= (size_t)shape[i];
  }
  if (ndim > 1) dims[strlen(dims) - 1] = '\0'; /* numpy writes (a, b) but (a,) */
  int len = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, dims);
  int total = 10 + len + 1;
  int pad = (64 - total % 64) % 64;
  FILE *f = fopen(path, "wb");
  if (!f) die(path);
  uint16_t hlen = (uint16_t)(len + pad + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fwrite(&hlen, 2, 1, f);
  fwrite(header, 1, (size_t)len, f);
  for (int i = 0; i < pad; i++) fputc(' ', f);
  fputc('\n', f);
  fwrite(data, itemsize, count, f);
  fclose(f);
}

/* ---- ONNX Runtime helpers ---- */
typedef struct {
  OrtValue *value;
  int64_t dims[MAX_DIMS];
  size_t ndim;
  size_t count;
  ONNXTensorElementDataType type;
  void *data;
} Out;

static OrtMemoryInfo *mem;

static OrtValue *tensor(void *data, size_t bytes, const int64_t *shape, size_t ndim, ONNXTensorElementDataType t) {
  OrtValue *v = NULL;
  ort_check(ort->CreateTensorWithDataAsOrtValue(mem, data, bytes, shape, ndim, t, &v), "CreateTensor");
  return v;
}

static void describe(Out *o) {
  OrtTensorTypeAndShapeInfo *info;
  ort_check(ort->GetTensorTypeAndShape(o->value, &info), "TypeAndShape");
  ort_check(ort->GetDimensionsCount(info, &o->ndim), "DimCount");
  if (o->ndim > MAX_DIMS) die("output rank too large");
  ort_check(ort->GetDimensions(info, o->dims, o->ndim), "Dims");
  ort_check(ort->GetTensorElementType(info, &o->type), "ElemType");
  ort_check(ort->GetTensorShapeElementCount(info, &o->count), "Count");
  ort->ReleaseTensorTypeAndShapeInfo(info);
  ort_check(ort->GetTensorMutableData(o->value, &o->data), "Data");
}

/* Run a session on named inputs; fills its first n_out outputs. */
static void run(OrtSession *s, const char **names, OrtValue **inputs, size_t n, Out *outs, size_t n_out) {
  char *out_names[4];
  OrtValue *values[4] = {0};
  OrtAllocator *alloc;
  ort_check(ort->GetAllocatorWithDefaultOptions(&alloc), "GetAllocator");
  for (size_t i = 0; i < n_out; i++) ort_check(ort->SessionGetOutputName(s, i, alloc, &out_names[i]), "OutputName");
  ort_check(ort->Run(s, NULL, names, (const OrtValue *const *)inputs, n, (const char *const *)out_names, n_out,
                     values),
            "Run");
  for (size_t i = 0; i < n_out; i++) {
    ort_check(ort->AllocatorFree(alloc, out_names[i]), "AllocatorFree");
    memset(&outs[i], 0, sizeof outs[i]);
    outs[i].value = values[i];
    describe(&outs[i]);
  }
}

static ONNXTensorElementDataType input_type(OrtSession *s, size_t index) {
  OrtTypeInfo *ti;
  const OrtTensorTypeAndShapeInfo *tsi;
  ONNXTensorElementDataType t;
  ort_check(ort->SessionGetInputTypeInfo(s, index, &ti), "InputTypeInfo");
  ort_check(ort->CastTypeInfoToTensorInfo(ti, &tsi), "CastTypeInfo");
  ort_check(ort->GetTensorElementType(tsi, &t), "ElemType");
  ort->ReleaseTypeInfo(ti);
  return t;
}

/* A bool mask as the dtype a graph input declares (bool, int64 or float). */
static OrtValue *mask_tensor(const uint8_t *mask, size_t n, const int64_t *shape, ONNXTensorElementDataType t,
                             void **keep) {
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL) {
    *keep = NULL;
    return tensor((void *)mask, n, shape, 2, t);
  }
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64) {
    int64_t *m = xmalloc(n * 8);
    for (size_t i = 0; i < n; i++) m[i] = mask[i];
    *keep = m;
    return tensor(m, n * 8, shape, 2, t);
  }
  float *m = xmalloc(n * 4);
  for (size_t i = 0; i < n; i++) m[i] = mask[i] ? 1.0f : 0.0f;
  *keep = m;
  return tensor(m, n * 4, shape, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) die(path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = xmalloc((size_t)n + 1);
  if (fread(text, 1, (size_t)n, f) != (size_t)n) die("short read");
  text[n] = '\0';
  fclose(f);
  return text;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: run_case ONNX_DIR CASE_JSON LIBONNXRUNTIME OUT_DIR\n");
    return 2;
  }
  const char *onnx_dir = argv[1], *out_dir = argv[4];
  if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "run_case: cannot create %s: %s\n", out_dir, strerror(errno));
    return 1;
  }
  if (ace_abi_version() != 1) die("library ABI is not 1");

  void *ort_lib = dlopen(argv[3], RTLD_NOW | RTLD_LOCAL);
  if (!ort_lib) die(dlerror());
  const OrtApiBase *(*get_base)(void) = (const OrtApiBase *(*)(void))dlsym(ort_lib, "OrtGetApiBase");
  if (!get_base) die("OrtGetApiBase not found");
  ort = get_base()->GetApi(ORT_API_WANTED);
  if (!ort) die("this libonnxruntime does not offer ORT API 23");

  /* context: tokenizer + silence latent of the exported folder */
  char config[4096];
  snprintf(config, sizeof config, "{\"onnx_dir\": \"%s\"}", onnx_dir);
  ctx = ace_create_context(config);
  if (!ctx) ace_check(ACE_STATUS_INTERNAL, "ace_create_context");

  char *case_text = read_file(argv[2]);
  char *req = NULL;
  ace_check(ace_prepare_request(ctx, case_text, &req), "ace_prepare_request");

  /* sessions: the options of the Python runtime */
  OrtEnv *env;
  ort_check(ort->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "acestep", &env), "CreateEnv");
  OrtSessionOptions *opts;
  ort_check(ort->CreateSessionOptions(&opts), "SessionOptions");
  const char *threads = getenv("ACESTEP_ORT_THREADS");
  ort_check(ort->SetIntraOpNumThreads(opts, threads ? atoi(threads) : 0), "IntraOp");
  ort_check(ort->SetInterOpNumThreads(opts, 1), "InterOp");
  ort_check(ort->SetSessionExecutionMode(opts, ORT_SEQUENTIAL), "ExecMode");
  ort_check(ort->SetSessionGraphOptimizationLevel(opts, ORT_ENABLE_ALL), "OptLevel");
  ort_check(ort->SetSessionLogSeverityLevel(opts, 3), "LogLevel");
  ort_check(ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mem), "MemoryInfo");
  const char *graphs[5] = {"text_encoder", "lyric_embedding", "condition_encoder", "dit_decoder", "vae_decoder"};
  OrtSession *sess[5];
  for (int i = 0; i < 5; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.onnx", onnx_dir, graphs[i]);
    ort_check(ort->CreateSession(env, path, opts, &sess[i]), path);
  }

  size_t n;
  int64_t batch = json_int(req, "batch"), frames = json_int(req, "latent_frames");
  int64_t steps = json_int(req, "steps"), n_tiles = json_int(req, "n_tiles");

  /* token ids and masks */
  size_t nt, nl;
  int64_t *text_ids = json_i64s(req, "text_token_ids.data", &nt);
  int64_t *lyric_ids = json_i64s(req, "lyric_token_ids.data", &nl);
  int64_t *tshape = json_i64s(req, "text_token_ids.shape", &n);
  int64_t *lshape = json_i64s(req, "lyric_token_ids.shape", &n);
  int64_t *tm = json_i64s(req, "text_attention_mask.data", &n);
  int64_t *lm = json_i64s(req, "lyric_attention_mask.data", &n);
  uint8_t *text_mask = xmalloc(nt), *lyric_mask = xmalloc(nl);
  for (size_t i = 0; i < nt; i++) text_mask[i] = (uint8_t)tm[i];
  for (size_t i = 0; i < nl; i++) lyric_mask[i] = (uint8_t)lm[i];
  write_npy(out_dir, "text_token_ids", "<i8", 8, text_ids, tshape, 2);
  write_npy(out_dir, "text_attention_mask", "|b1", 1, text_mask, tshape, 2);
  write_npy(out_dir, "lyric_token_ids", "<i8", 8, lyric_ids, lshape, 2);
  write_npy(out_dir, "lyric_attention_mask", "|b1", 1, lyric_mask, lshape, 2);

  const char *ids_name[1] = {"input_ids"};
  OrtValue *in[5];
  in[0] = tensor(text_ids, nt * 8, tshape, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
  Out text_h, lyric_h, cond[2], vt, dec;
  run(sess[0], ids_name, in, 1, &text_h, 1);
  ort->ReleaseValue(in[0]);
  write_npy(out_dir, "text_hidden_states", "<f4", 4, text_h.data, text_h.dims, text_h.ndim);
  in[0] = tensor(lyric_ids, nl * 8, lshape, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
  run(sess[1], ids_name, in, 1, &lyric_h, 1);
  ort->ReleaseValue(in[0]);
  write_npy(out_dir, "lyric_hidden_states", "<f4", 4, lyric_h.data, lyric_h.dims, lyric_h.ndim);

  /* condition encoder */
  int64_t *timbre_shape = json_i64s(req, "timbre_reference_shape", &n);
  size_t timbre_n = (size_t)(timbre_shape[0] * timbre_shape[1] * timbre_shape[2]);
  float *timbre = xmalloc(timbre_n * 4);
  ace_check(ace_timbre_reference(ctx, (size_t)batch, timbre, timbre_n), "ace_timbre_reference");
  const char *cond_names[5] = {"text_hidden_states", "text_attention_mask", "lyric_hidden_states",
                               "lyric_attention_mask", "timbre_reference"};
  void *keep1, *keep2;
  in[0] = text_h.value;
  in[1] = mask_tensor(text_mask, nt, tshape, input_type(sess[2], 1), &keep1);
  in[2] = lyric_h.value;
  in[3] = mask_tensor(lyric_mask, nl, lshape, input_type(sess[2], 3), &keep2);
  in[4] = tensor(timbre, timbre_n * 4, timbre_shape, 3, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
  run(sess[2], cond_names, in, 5, cond, 2);
  Out enc = cond[0], enc_mask = cond[1];
  write_npy(out_dir, "encoder_hidden_states", "<f4", 4, enc.data, enc.dims, enc.ndim);
  uint8_t *em = xmalloc(enc_mask.count);
  for (size_t i = 0; i < enc_mask.count; i++) {
    if (enc_mask.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL) em[i] = ((uint8_t *)enc_mask.data)[i] != 0;
    else if (enc_mask.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64) em[i] = ((int64_t *)enc_mask.data)[i] != 0;
    else em[i] = ((float *)enc_mask.data)[i] != 0.0f;
  }
  write_npy(out_dir, "encoder_attention_mask", "|b1", 1, em, enc_mask.dims, enc_mask.ndim);

  /* context latents, schedule, noise */
  int64_t *ctx_shape = json_i64s(req, "context_latents_shape", &n);
  size_t ctx_n = (size_t)(ctx_shape[0] * ctx_shape[1] * ctx_shape[2]);
  float *ctx_lat = xmalloc(ctx_n * 4);
  ace_check(ace_context_latents(ctx, (size_t)frames, (size_t)batch, ctx_lat, ctx_n), "ace_context_latents");
  write_npy(out_dir, "context_latents", "<f4", 4, ctx_lat, ctx_shape, 3);
  double *sched = json_f64s(req, "schedule", &n);
  float *sched32 = xmalloc((size_t)steps * 4);
  for (int64_t i = 0; i < steps; i++) sched32[i] = (float)sched[i];
  write_npy(out_dir, "schedule", "<f4", 4, sched32, &steps, 1);
  size_t ns;
  int64_t *seeds_i = json_i64s(req, "seeds", &ns);
  uint64_t *seeds = xmalloc(ns * 8);
  for (size_t i = 0; i < ns; i++) seeds[i] = (uint64_t)seeds_i[i];
  int64_t lat_shape[3] = {batch, frames, 64};
  size_t lat_n = (size_t)(batch * frames * 64);
  float *xt = xmalloc(lat_n * 4);
  ace_check(ace_noise(ctx, seeds, ns, (size_t)frames, xt, lat_n), "ace_noise");
  write_npy(out_dir, "noise", "<f4", 4, xt, lat_shape, 3);

  /* the denoising loop: the library gives t and dt, the host runs the DiT, the library steps */
  float *xs = xmalloc((size_t)steps * lat_n * 4), *vs = xmalloc((size_t)steps * lat_n * 4);
  float *t = xmalloc((size_t)batch * 4);
  size_t nts;
  double *timesteps = NULL;
  char state[8192], ts_text[4096] = "null";
  if (ace_json_f64(case_text, "timesteps", NULL, 0, &nts) == ACE_STATUS_OK) {
    timesteps = json_f64s(case_text, "timesteps", &nts);
    strcpy(ts_text, "[");
    for (size_t i = 0; i < nts; i++) {
      char v[64];
      snprintf(v, sizeof v, "%s%.17g", i ? ", " : "", timesteps[i]);
      strcat(ts_text, v);
    }
    strcat(ts_text, "]");
  }
  double shift = 1.0;
  if (ace_json_f64(case_text, "shift", &shift, 1, &n) != ACE_STATUS_OK) shift = 1.0;
  const char *dit_names[5] = {"hidden_states", "timestep", "timestep_r", "encoder_hidden_states", "context_latents"};
  int64_t tshape1[1] = {batch};
  for (int64_t i = 0; i < steps; i++) {
    snprintf(state, sizeof state, "{\"shift\": %.17g, \"timesteps\": %s, \"step\": %lld}", shift, ts_text,
             (long long)i);
    char *info = NULL;
    ace_check(ace_prepare_step_inputs(ctx, state, t, (size_t)batch, &info), "ace_prepare_step_inputs");
    double dt;
    ace_check(ace_json_f64(info, "dt", &dt, 1, &n), "dt");
    ace_string_free(info);
    memcpy(xs + (size_t)i * lat_n, xt, lat_n * 4);
    in[0] = tensor(xt, lat_n * 4, lat_shape, 3, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    in[1] = tensor(t, (size_t)batch * 4, tshape1, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    in[2] = tensor(t, (size_t)batch * 4, tshape1, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    in[3] = enc.value;
    in[4] = tensor(ctx_lat, ctx_n * 4, ctx_shape, 3, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    run(sess[3], dit_names, in, 5, &vt, 1);
    if (vt.count != lat_n) die("dit_decoder returned a vt of another size");
    memcpy(vs + (size_t)i * lat_n, vt.data, lat_n * 4);
    ace_check(ace_scheduler_step(ctx, xt, (const float *)vt.data, lat_n, dt, xt), "ace_scheduler_step");
    ort->ReleaseValue(vt.value);
    ort->ReleaseValue(in[0]);
    ort->ReleaseValue(in[1]);
    ort->ReleaseValue(in[2]);
    ort->ReleaseValue(in[4]);
  }
  int64_t stacked[4] = {steps, batch, frames, 64};
  write_npy(out_dir, "xt", "<f4", 4, xs, stacked, 4);
  write_npy(out_dir, "vt", "<f4", 4, vs, stacked, 4);
  write_npy(out_dir, "pred_latents", "<f4", 4, xt, lat_shape, 3);

  /* tiled VAE decode: windows and trims from the library */
  float *audio = NULL;
  size_t channels = 0, samples = 0, filled = 0;
  const char *vae_names[1] = {"latents"};
  for (int64_t b = 0; b < batch; b++) {
    for (int64_t k = 0; k < n_tiles; k++) {
      char p1[64], p2[64];
      snprintf(p1, sizeof p1, "tiles.%lld.win_start", (long long)k);
      snprintf(p2, sizeof p2, "tiles.%lld.win_end", (long long)k);
      int64_t width = json_int(req, p2) - json_int(req, p1);
      float *win = xmalloc((size_t)width * 64 * 4);
      ace_check(ace_tile_window(ctx, xt, lat_n, (size_t)batch, (size_t)frames, (size_t)b, (size_t)k, win,
                                (size_t)width * 64),
                "ace_tile_window");
      int64_t wshape[3] = {1, 64, width};
      in[0] = tensor(win, (size_t)width * 256, wshape, 3, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      run(sess[4], vae_names, in, 1, &dec, 1);
      size_t dlen = (size_t)dec.dims[2], start, end;
      ace_check(ace_tile_trim(ctx, (size_t)frames, (size_t)k, dlen, &start, &end), "ace_tile_trim");
      if (!audio) {
        channels = (size_t)dec.dims[1];
        samples = (size_t)frames * 1920 * 2; /* generous; the real count is known after the last tile */
        audio = xmalloc((size_t)batch * channels * samples * 4);
      }
      /* item-major, channel-major: append [start, end) of every channel at the item's running offset */
      for (size_t c = 0; c < channels; c++)
        memcpy(audio + ((size_t)b * channels + c) * samples + filled, (float *)dec.data + c * dlen + start,
               (end - start) * 4);
      filled += end - start;
      ort->ReleaseValue(dec.value);
      ort->ReleaseValue(in[0]);
      free(win);
    }
    if (b + 1 < batch) filled = 0;
  }
  /* compact [B, C, samples_cap] to [B, C, filled] */
  float *decoded = xmalloc((size_t)batch * channels * filled * 4);
  for (size_t r = 0; r < (size_t)batch * channels; r++) memcpy(decoded + r * filled, audio + r * samples, filled * 4);
  int64_t ashape[3] = {batch, (int64_t)channels, (int64_t)filled};
  write_npy(out_dir, "audio_decoded", "<f4", 4, decoded, ashape, 3);
  size_t an = (size_t)batch * channels * filled;
  ace_check(ace_postprocess_audio(ctx, decoded, an, (size_t)batch, decoded), "ace_postprocess_audio");
  write_npy(out_dir, "audio", "<f4", 4, decoded, ashape, 3);
  char wav[4096];
  snprintf(wav, sizeof wav, "%s/out.wav", out_dir);
  ace_check(ace_write_wav(ctx, wav, decoded, channels * filled, channels), "ace_write_wav");
  /* the summary line's case id: the request's "id" string as the library wrote it (JSON-escaped; cut at an
   * escaped quote, up to 255 bytes: a summary only) */
  char id[256] = "?";
  const char *at = strstr(req, "\"id\":");
  if (at) {
    at = strchr(at + 5, '"');
    const char *end = at ? strchr(at + 1, '"') : NULL;
    if (end && (size_t)(end - at - 1) < sizeof id) {
      memcpy(id, at + 1, (size_t)(end - at - 1));
      id[end - at - 1] = '\0';
    }
  }
  printf("{\"case\": \"%s\", \"batch\": %lld, \"frames\": %lld, \"steps\": %lld, \"samples\": %zu}\n", id,
         (long long)batch, (long long)frames, (long long)steps, filled);
  ace_string_free(req);
  ace_free_context((AceContext *)ctx);
  return 0;
}
