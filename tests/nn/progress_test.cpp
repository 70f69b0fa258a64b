// The progress bar's exact output on a terminal (in place with '\r') and off one (plain lines),
// with an injected clock, and the CSV logger's format.
#include <edifice/nn/progress.hpp>

#include <fmt/format.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace edifice;

TEST_CASE("progress values and durations are formatted like Keras and tqdm", "[nn][progress]") {
  CHECK(nn::format_metric(0.41234) == "0.4123");
  CHECK(nn::format_metric(1234.5) == "1234.5000");
  CHECK(nn::format_metric(0.0) == "0.0000");
  CHECK(nn::format_metric(1.234e-5) == "1.2340e-05");
  CHECK(nn::format_metric(-0.5) == "-0.5000");
  CHECK(nn::format_metric(NAN) == "NaN");
  CHECK(nn::format_metric(INFINITY) == "Inf");
  CHECK(nn::format_metric(-INFINITY) == "-Inf");
  CHECK(nn::format_duration(0) == "00:00");
  CHECK(nn::format_duration(59.9) == "00:59");
  CHECK(nn::format_duration(61) == "01:01");
  CHECK(nn::format_duration(3725) == "1:02:05");
  CHECK(nn::format_duration(-1) == "?");
  CHECK(nn::format_duration(INFINITY) == "?");
  std::ostringstream s;
  CHECK(!nn::is_terminal(s));
}

TEST_CASE("on a terminal the bar redraws in place, at most every 0.1 s", "[nn][progress]") {
  double t = 0;
  std::ostringstream out;
  nn::ProgressBar bar(out, true, {.bar_width = 10, .clock = [&] { return t; }});
  bar.start("Epoch 1/2", 4);
  CHECK(bar.render(0, {}, 0) == "Epoch 1/2 0/4 [..........]   0% | ? it/s | 00:00<?");
  t = 0.5;
  bar.update(1, {{"loss", 123.0}});  // drawn: first update; rate 1 step / 0.5 s
  t = 0.55;
  bar.update(2, {{"loss", 1.0}});  // 0.05 s later: skipped
  t = 1.0;
  bar.update(3, {{"loss", 1.0}});  // drawn; rate EMA (0.3 * 4 + 0.7 * 0.6) / (1 - 0.7^2) = 3.18
  t = 1.2;
  bar.update(4, {{"loss", 1.0}});  // the last step: left to finish()
  t = 1.5;
  bar.finish({{"loss", 0.25}, {"val_loss", 0.3}});
  const std::string expected =
      "\rEpoch 1/2 1/4 [=>........]  25% | 2.0 it/s | 00:00<00:01 | loss: 123.0000"
      // Two characters shorter than the previous draw: padded with two spaces.
      "\rEpoch 1/2 3/4 [======>...]  75% | 3.2 it/s | 00:01<00:00 | loss: 1.0000  "
      "\rEpoch 1/2 4/4 [==========] 100% | 2.6 it/s | 00:01<00:00 | loss: 0.2500 - val_loss: "
      "0.3000\n";
  CHECK(out.str() == expected);

  // A message clears the bar line first; the bar is redrawn at the next update.
  std::ostringstream out2;
  t = 0;
  nn::ProgressBar bar2(out2, true, {.bar_width = 4, .clock = [&] { return t; }});
  bar2.start("", 8, 2);  // resumed: 2 steps already done, not counted in the rate
  t = 1;
  bar2.update(4, {});
  bar2.message("note");
  t = 1.01;
  bar2.update(5, {});
  const std::string first = "\r4/8 [=>..]  50% | 2.0 it/s | 00:01<00:02";
  CHECK(out2.str().rfind(first + "\r" + std::string(first.size() - 1, ' ') + "\rnote\n\r5/8 [=>..]",
                         0) == 0);
}

TEST_CASE("off a terminal the bar prints plain lines every N steps and at the end",
          "[nn][progress]") {
  double t = 0;
  std::ostringstream out;
  nn::ProgressBar bar(out, false, {.line_every = 2, .clock = [&] { return t; }});
  bar.start("Epoch 1/2", 5);
  for (int k = 1; k <= 5; ++k) {
    t = k;
    bar.update(k, {{"loss", 0.5}});
  }
  bar.finish({{"loss", 0.5}, {"val_loss", 0.25}});
  CHECK(out.str() ==
        "Epoch 1/2 2/5  40% | 1.0 it/s | 00:02<00:03 | loss: 0.5000\n"
        "Epoch 1/2 4/5  80% | 1.0 it/s | 00:04<00:01 | loss: 0.5000\n"
        "Epoch 1/2 5/5 100% | 1.0 it/s | 00:05<00:00 | loss: 0.5000 - val_loss: 0.2500\n");

  // Unknown total: no percentage or remaining time. Slow steps show s/it.
  std::ostringstream out2;
  t = 0;
  nn::ProgressBar open(out2, false,
                       {.line_every = 2, .smoothing = 1.0, .clock = [&] { return t; }});
  open.start("Epoch 3", 0);
  t = 1;
  open.update(1, {});
  t = 5;
  open.update(2, {{"loss", NAN}});
  CHECK(out2.str() == "Epoch 3 2 | 2.50 s/it | 00:05 | loss: NaN\n");
}

TEST_CASE("the CSV logger writes a fixed header and exact numbers", "[nn][progress]") {
  const auto path =
      std::filesystem::temp_directory_path() / fmt::format("edifice_csv_test_{}.csv", ::getpid());
  {
    nn::CsvLogger log(path.string(), {"loss", "val_loss", "lr"}, false, 1);
    log.row(0, 1, {0.1, 0.0, 1e-3}, {true, false, true});
    log.row(1, 2, {NAN, -INFINITY, 0.25});
    CHECK(log.header() == "epoch,step,loss,val_loss,lr");
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  CHECK(ss.str() == "epoch,step,loss,val_loss,lr\n0,1,0.1,,0.001\n1,2,nan,-inf,0.25\n");
  {
    nn::CsvLogger again(path.string(), {"loss", "val_loss", "lr"}, true);
    again.row(2, 3, {1, 2, 3});
  }
  std::ifstream in2(path);
  std::stringstream ss2;
  ss2 << in2.rdbuf();
  CHECK(ss2.str() == "epoch,step,loss,val_loss,lr\n0,1,0.1,,0.001\n1,2,nan,-inf,0.25\n2,3,1,2,3\n");
  std::filesystem::remove(path);
}
