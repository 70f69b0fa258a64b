/* Runs an edifice artifact (edifice-export) from C: reads its inputs from a file, runs it,
 * writes its outputs to a file and prints the latency. Plain C11; links only the artifact,
 * -lm and -lpthread. Generic over artifacts: compile with the artifact's header and name,
 *
 *   gcc -std=c11 -O2 -DMODEL_HEADER='"policy.h"' -DMODEL=policy deploy.c policy.o -lm -lpthread
 *
 * Usage: deploy INPUTS.bin OUTPUTS.bin [--params PARAMS.bin] [--repeat N] [--threads N]
 *   INPUTS.bin   every input's raw bytes, in order (MODEL_input_bytes[i] each)
 *   OUTPUTS.bin  receives every output's raw bytes, in order
 *   --params     for artifacts exported with run-time parameters: NAME.params.bin or a file
 *                of the same layout (each parameter padded to a multiple of 64 bytes)
 *   --repeat N   runs N times and prints the mean latency (default 1)
 *   --threads N  MODEL_set_threads(N) first (default: the artifact's 1)
 * Exit status: 0, 1 for bad usage or files, 2 when the artifact returns an error. */
#define _POSIX_C_SOURCE 199309L
#include MODEL_HEADER

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PASTE2(a, b) a##b
#define PASTE(a, b) PASTE2(a, b)
#define M(x) PASTE(MODEL, x)

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* 64-byte aligned, as the artifact requires; zeroed. */
static void* aligned_buffer(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = aligned_alloc(64, rounded ? rounded : 64);
  if (!p) {
    fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
    exit(1);
  }
  memset(p, 0, rounded ? rounded : 64);
  return p;
}

/* Reads exactly `bytes` bytes of `path` into an aligned buffer. */
static void* read_file(const char* path, size_t bytes) {
  FILE* f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    exit(1);
  }
  void* p = aligned_buffer(bytes);
  size_t got = fread(p, 1, bytes, f);
  int extra = fgetc(f);
  fclose(f);
  if (got != bytes || extra != EOF) {
    fprintf(stderr, "%s: expected exactly %zu bytes\n", path, bytes);
    exit(1);
  }
  return p;
}

int main(int argc, char** argv) {
  const char* params_path = NULL;
  int repeat = 1;
  if (argc < 3) {
    fprintf(stderr,
            "usage: %s INPUTS.bin OUTPUTS.bin [--params PARAMS.bin] [--repeat N] [--threads N]\n",
            argv[0]);
    return 1;
  }
  for (int i = 3; i < argc; ++i) {
    if (!strcmp(argv[i], "--params") && i + 1 < argc) {
      params_path = argv[++i];
    } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
      repeat = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      M(_set_threads)(atoi(argv[++i]));
    } else {
      fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 1;
    }
  }

  /* Inputs: one file, each input at its own aligned buffer. */
  size_t input_total = 0;
  for (int i = 0; i < M(_num_inputs); ++i) input_total += M(_input_bytes)[i];
  char* input_file = read_file(argv[1], input_total);
  const void* inputs[M(_num_inputs) + 1];
  size_t offset = 0;
  for (int i = 0; i < M(_num_inputs); ++i) {
    void* p = aligned_buffer(M(_input_bytes)[i]);
    memcpy(p, input_file + offset, M(_input_bytes)[i]);
    offset += M(_input_bytes)[i];
    inputs[i] = p;
  }
  void* outputs[M(_num_outputs) + 1];
  for (int i = 0; i < M(_num_outputs); ++i) outputs[i] = aligned_buffer(M(_output_bytes)[i]);
  void* workspace = aligned_buffer(M(_workspace_bytes));

#if M(_runtime_params)
  size_t params_total = 0;
  for (int i = 0; i < M(_num_params); ++i) params_total += (M(_param_bytes)[i] + 63) / 64 * 64;
  if (!params_path) {
    fprintf(stderr, "this artifact takes its parameters at run time: pass --params FILE\n");
    return 1;
  }
  char* params_file = read_file(params_path, params_total);
  const void* params[M(_num_params) + 1];
  offset = 0;
  for (int i = 0; i < M(_num_params); ++i) {
    params[i] = params_file + offset;
    offset += (M(_param_bytes)[i] + 63) / 64 * 64;
  }
#define RUN() M(_run_params)(params, inputs, outputs, workspace)
#else
  if (params_path) {
    fprintf(stderr, "this artifact has its parameters built in: no --params\n");
    return 1;
  }
#define RUN() M(_run)(inputs, outputs, workspace)
#endif

  double start = now_us();
  int code = RUN();
  double first = now_us() - start;
  if (code != 0) {
    fprintf(stderr, "error %d: %s\n", code, M(_error_message)(code));
    return 2;
  }
  start = now_us();
  for (int r = 1; r < repeat; ++r) RUN();
  double mean = repeat > 1 ? (now_us() - start) / (repeat - 1) : first;
  printf("first run %.1f us; %d runs, %.1f us per run\n", first, repeat, mean);

  FILE* out = fopen(argv[2], "wb");
  if (!out) {
    fprintf(stderr, "cannot write %s\n", argv[2]);
    return 1;
  }
  for (int i = 0; i < M(_num_outputs); ++i) fwrite(outputs[i], 1, M(_output_bytes)[i], out);
  fclose(out);
  return 0;
}
