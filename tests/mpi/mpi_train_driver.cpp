// The MPI tests' program (tests/mpi/run_mpi_test.sh runs it under mpirun): Adam on a small
// sliding-window model (models::multi_head, dropout on) over 40 samples in global batches of
// 16 (the last partial: 8), split into 4 micro-shards; writes the final parameters.
//
//   mpi_train_driver --steps N --out PARAMS [--resume CKPT] [--checkpoint CKPT]
//                    [--kill-rank R --at-step S] [--throw-rank R --at-step S]
//                    [--hang-rank R --at-step S]
//                    [--mismatch-rank R] [--single-process] [--timeout SECONDS]
//
// --steps is absolute (max_steps): a resumed run continues to it. --checkpoint saves at the
// end (rank 0 writes). --kill-rank kills that rank with SIGKILL after step S, --throw-rank
// throws there, --hang-rank sleeps there for an hour (the others' collective timeout, --timeout,
// must end the job); --mismatch-rank gives that rank another learning rate. --single-process runs
// the same data-parallel step without MPI (nn::single_process()).
#include <edifice/models/multi_head.hpp>
#include <edifice/nn/checkpoint.hpp>
#include <edifice/nn/distributed.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/trainer.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

using namespace edifice;
namespace mh = edifice::models::multi_head;

namespace {

struct Args {
  std::int64_t steps = 20;
  std::string out, resume, checkpoint;
  int kill_rank = -1, throw_rank = -1, hang_rank = -1, mismatch_rank = -1;
  std::int64_t at_step = 5;
  bool single_process = false;
  double timeout_s = 60;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--steps")
      a.steps = std::stoll(value());
    else if (flag == "--out")
      a.out = value();
    else if (flag == "--resume")
      a.resume = value();
    else if (flag == "--checkpoint")
      a.checkpoint = value();
    else if (flag == "--kill-rank")
      a.kill_rank = std::stoi(value());
    else if (flag == "--hang-rank")
      a.hang_rank = std::stoi(value());
    else if (flag == "--throw-rank")
      a.throw_rank = std::stoi(value());
    else if (flag == "--at-step")
      a.at_step = std::stoll(value());
    else if (flag == "--mismatch-rank")
      a.mismatch_rank = std::stoi(value());
    else if (flag == "--single-process")
      a.single_process = true;
    else if (flag == "--timeout")
      a.timeout_s = std::stod(value());
    else {
      std::fprintf(stderr, "unknown argument %s\n", flag.c_str());
      std::exit(2);
    }
  }
  return a;
}

// 40 sequences of 8 frames of 8 features; the class is which quarter the sum of the frame's
// first features at t-3 falls in (a pure function of the index, no randomness to share).
nn::Dataset make_data() {
  const std::int64_t n = 40, seq = 8, dim = 8, classes = 4;
  Tensor x(DType::f32, {n, seq, dim});
  Tensor y(DType::f32, {n, classes});
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t t = 0; t < seq; ++t)
      for (std::int64_t d = 0; d < dim; ++d)
        x.data<float>()[(i * seq + t) * dim + d] =
            static_cast<float>(((i * 7 + t * 3 + d * 5) % 11) - 5) / 5.0f;
    const float v = x.data<float>()[(i * seq + seq - 4) * dim];
    const auto c = static_cast<std::int64_t>((v + 1.0f) * 1.999f) % classes;
    y.data<float>()[i * classes + c] = 1.0f;
  }
  return nn::Dataset(x, y);
}

nn::Model make_model() {
  mh::Built b = mh::build_sliding_window({.embed_dim = 8,
                                          .window_size = 4,
                                          .num_heads = 2,
                                          .head_dim = 4,
                                          .num_layers = 1,
                                          .ffn_dim = 16,
                                          .dropout = 0.2,
                                          .seq_len = 8});
  return nn::Model(nn::dense(b.output, 4, {.name = "head"}));
}

int run(const Args& a) {
  std::shared_ptr<nn::Communicator> comm =
      a.single_process ? nn::single_process() : nn::mpi({.timeout_s = a.timeout_s});
  const double lr = comm->rank() == a.mismatch_rank ? 2e-2 : 1e-2;
  nn::Trainer trainer(make_model(), {.loss = nn::Loss::categorical_cross_entropy_with_logits(),
                                     .metrics = {nn::Metric::categorical_accuracy()},
                                     .optimizer = nn::adam({.learning_rate = lr}),
                                     .distributed = comm,
                                     .distribution = {.micro_shards = 4, .bucket_bytes = 1024}});
  if (a.resume.empty())
    trainer.init(3);
  else
    trainer.load_checkpoint(a.resume);
  trainer.on_step([&](const nn::StepEvent& ev) {
    if (ev.step == a.at_step && comm->rank() == a.kill_rank) std::raise(SIGKILL);
    if (ev.step == a.at_step && comm->rank() == a.throw_rank)
      throw Error(fmt::format("injected failure at step {}", ev.step));
    if (ev.step == a.at_step && comm->rank() == a.hang_rank)
      std::this_thread::sleep_for(std::chrono::hours(1));
    if (comm->rank() == 0)
      std::printf("step %lld loss %.9g accuracy %.9g\n", static_cast<long long>(ev.step), ev.loss,
                  ev.metrics[0].second);
    return nn::Control::proceed;
  });
  nn::History h = trainer.fit(
      make_data(), {.epochs = 0, .max_steps = a.steps, .batch_size = 16, .progress = false});
  if (!a.checkpoint.empty()) trainer.save_checkpoint(a.checkpoint);
  if (comm->rank() == 0 && !a.out.empty()) nn::save_params(a.out, trainer.state().params);
  if (comm->rank() == 0)
    std::printf("%s: %d rank(s), %lld steps\n", comm->name().c_str(), comm->size(),
                static_cast<long long>(h.steps));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  try {
    return run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
