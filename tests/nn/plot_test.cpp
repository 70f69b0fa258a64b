// Plots: the PNG writer (decoded back with zlib), heatmap layout and colours, line plots and the
// training-curve plot of a real trainer CSV, and their error messages.
#include <edifice/core/error.hpp>
#include <edifice/nn/layers.hpp>
#include <edifice/nn/plot.hpp>
#include <edifice/nn/trainer.hpp>

#include <catch2/catch.hpp>
#include <zlib.h>

#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

using namespace edifice;
namespace fs = std::filesystem;
using edifice::test::error_of;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::uint32_t be32(const std::string& s, std::size_t at) {
  return (std::uint32_t(std::uint8_t(s[at])) << 24) |
         (std::uint32_t(std::uint8_t(s[at + 1])) << 16) |
         (std::uint32_t(std::uint8_t(s[at + 2])) << 8) | std::uint32_t(std::uint8_t(s[at + 3]));
}

// Decodes a PNG as nn::write_png writes it (8-bit RGB, filter 0), checking every chunk's CRC.
nn::Image decode_png(const std::string& png) {
  REQUIRE(png.substr(0, 8) == "\x89PNG\r\n\x1a\n");
  nn::Image img;
  std::string idat;
  for (std::size_t at = 8; at < png.size();) {
    std::uint32_t len = be32(png, at);
    std::string type = png.substr(at + 4, 4);
    std::string body = png.substr(at + 4, 4 + len);
    REQUIRE(be32(png, at + 8 + len) ==
            crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size()));
    if (type == "IHDR") {
      img.width = static_cast<int>(be32(png, at + 8));
      img.height = static_cast<int>(be32(png, at + 12));
      REQUIRE(png.substr(at + 16, 5) == std::string("\x08\x02\x00\x00\x00", 5));
    } else if (type == "IDAT") {
      idat += png.substr(at + 8, len);
    }
    at += 12 + len;
  }
  const std::size_t row = std::size_t(img.width) * 3 + 1;
  std::string raw(row * img.height, '\0');
  uLongf raw_size = raw.size();
  REQUIRE(uncompress(reinterpret_cast<Bytef*>(raw.data()), &raw_size,
                     reinterpret_cast<const Bytef*>(idat.data()), idat.size()) == Z_OK);
  REQUIRE(raw_size == raw.size());
  for (int y = 0; y < img.height; ++y) {
    REQUIRE(raw[y * row] == 0);
    img.rgb.insert(img.rgb.end(), raw.begin() + y * row + 1, raw.begin() + (y + 1) * row);
  }
  return img;
}

std::array<int, 3> pixel(const nn::Image& img, int x, int y) {
  std::size_t at = (std::size_t(y) * img.width + x) * 3;
  return {img.rgb[at], img.rgb[at + 1], img.rgb[at + 2]};
}

struct TempDir {
  fs::path path =
      fs::temp_directory_path() / fs::path("edifice_plot_test_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

}  // namespace

TEST_CASE("plot: write_png writes a PNG that decodes to the same pixels", "[nn][plot]") {
  nn::Image img{.width = 7, .height = 3, .rgb = {}};
  for (int i = 0; i < 7 * 3 * 3; ++i) img.rgb.push_back(static_cast<std::uint8_t>(i * 37));
  TempDir dir;
  nn::write_png(dir.file("a.png"), img);
  nn::Image back = decode_png(read_bytes(dir.file("a.png")));
  CHECK(back.width == 7);
  CHECK(back.height == 3);
  CHECK(back.rgb == img.rgb);
  CHECK(error_of([&] { nn::write_png(dir.file("b.png"), {.width = 2, .height = 2, .rgb = {}}); }) ==
        dir.file("b.png") + ": cannot write a 2x2 image holding 0 bytes");
}

TEST_CASE("plot: a heatmap puts each value's colour in its cell, with axes and a colour bar",
          "[nn][plot]") {
  // 2 x 3 values; the maximum (row 1, column 2) is yellow, the minimum (row 0, column 0) dark.
  std::vector<double> v = {0.0, 0.5, 0.25, 0.75, 0.5, 1.0};
  nn::HeatmapOptions o{.title = "T",
                       .x_label = "key",
                       .y_label = "sample",
                       .x_ticks = {{0, "a"}, {2, "c"}},
                       .y_ticks = {{1, "1"}},
                       .colour_bar_label = "weight",
                       .cell_width = 20,
                       .cell_height = 10};
  nn::Image img = nn::draw_heatmap(v, 2, 3, o);
  // Find the map: the first dark-purple pixel scanning rows from the top (the min cell).
  int x0 = -1, y0 = -1;
  for (int y = 0; y < img.height && x0 < 0; ++y)
    for (int x = 0; x < img.width; ++x)
      if (pixel(img, x, y) == std::array<int, 3>{68, 1, 84}) {
        x0 = x, y0 = y;
        break;
      }
  REQUIRE(x0 > 0);
  CHECK(pixel(img, x0 + 19, y0 + 9) == std::array<int, 3>{68, 1, 84});
  CHECK(pixel(img, x0 + 2 * 20 + 10, y0 + 10 + 5) == std::array<int, 3>{253, 231, 37});
  CHECK(pixel(img, x0 + 20 + 10, y0 + 5) == std::array<int, 3>{33, 145, 140});  // 0.5
  // Ink (dark text pixels) above the map (title), left of it (y label) and below it (x label).
  auto ink_in = [&](int xa, int ya, int xb, int yb) {
    for (int y = ya; y < yb; ++y)
      for (int x = xa; x < xb; ++x)
        if (pixel(img, x, y) == std::array<int, 3>{34, 34, 34}) return true;
    return false;
  };
  CHECK(ink_in(0, 0, img.width, y0 - 2));
  CHECK(ink_in(0, y0, x0 - 2, y0 + 20));
  CHECK(ink_in(x0, y0 + 22, x0 + 60, img.height));
  // The colour bar, right of the map: yellow at its top, dark purple at its bottom.
  bool yellow_right = false;
  for (int x = x0 + 61; x < img.width; ++x) {
    auto top = pixel(img, x, y0 + 1), bottom = pixel(img, x, y0 + 18);
    if (top[0] > 200 && top[1] > 200 && top[2] < 100 && bottom[0] < 100 && bottom[1] < 60)
      yellow_right = true;
  }
  CHECK(yellow_right);
  // Deterministic.
  CHECK(nn::draw_heatmap(v, 2, 3, o).rgb == img.rgb);
  CHECK(error_of([&] { nn::draw_heatmap(v, 2, 2); }) ==
        "draw_heatmap: 6 values do not fill 2 rows x 2 columns");
}

TEST_CASE("plot: training curves from a trainer's CSV log", "[nn][plot]") {
  TempDir dir;
  auto input = nn::input("x", {nn::dynamic, 2});
  nn::Trainer t(nn::Model(nn::dense(input, 1)),
                {.loss = nn::Loss::mse(),
                 .metrics = {nn::Metric::from_loss(nn::Loss::mae())},
                 .optimizer = nn::sgd({.learning_rate = nn::Schedule::constant(0.1)})});
  t.init(1);
  Tensor xs = Tensor::from_vector<float>({8, 2}, {0, 0, 0, 1, 1, 0, 1, 1, 2, 0, 0, 2, 2, 2, 1, 2});
  Tensor ys = Tensor::from_vector<float>({8, 1}, {0, 1, 1, 2, 2, 2, 4, 3});
  const std::string csv = dir.file("m.csv");
  t.fit(nn::Dataset(xs, ys), {.epochs = 5,
                              .batch_size = 4,
                              .validation = nn::Dataset(xs, ys),
                              .progress = false,
                              .csv_path = csv});
  nn::plot_training_csv(csv, dir.file("curves.png"), "Curves");
  nn::Image img = decode_png(read_bytes(dir.file("curves.png")));
  CHECK(img.width == 1000);
  // Three panels: loss (with val_loss), metrics (mae, val_mae), learning rate.
  CHECK(img.height > 3 * 280);
  // Each series' colour appears: loss blue, val_loss orange, mae green, val_mae red, lr purple.
  auto has = [&](std::array<int, 3> c) {
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x)
        if (pixel(img, x, y) == c) return true;
    return false;
  };
  CHECK(has({31, 119, 180}));
  CHECK(has({255, 127, 14}));
  CHECK(has({44, 160, 44}));
  CHECK(has({214, 39, 40}));
  CHECK(has({148, 103, 189}));

  // A long per-step log (smoothed curves), with CRLF line ends and an empty cell.
  {
    std::ofstream long_csv(dir.file("long.csv"));
    long_csv << "epoch,step,loss,acc,lr,elapsed_s\r\n";
    for (int i = 1; i <= 5000; ++i)
      long_csv << 0 << ',' << i << ',' << 1.0 / i << ',' << (i == 7 ? "" : "0.5") << ",0.1,"
               << i << "\r\n";
  }
  nn::plot_training_csv(dir.file("long.csv"), dir.file("long.png"));
  CHECK(decode_png(read_bytes(dir.file("long.png"))).width == 1000);

  std::ofstream(dir.file("bad.csv")) << "a,b\n1,2\n";
  CHECK(error_of([&] { nn::plot_training_csv(dir.file("bad.csv"), dir.file("x.png")); }) ==
        dir.file("bad.csv") +
            ":1: not a training log: the header is \"a,b\", expected \"epoch,step,loss,...\"");
  std::ofstream(dir.file("nan.csv")) << "epoch,step,loss\n0,1,abc\n";
  CHECK(error_of([&] { nn::plot_training_csv(dir.file("nan.csv"), dir.file("x.png")); }) ==
        dir.file("nan.csv") + ":2: column \"loss\" holds \"abc\", not a number");
  std::ofstream(dir.file("short.csv")) << "epoch,step,loss\n0,1\n";
  CHECK(error_of([&] { nn::plot_training_csv(dir.file("short.csv"), dir.file("x.png")); }) ==
        dir.file("short.csv") + ":2: 2 cells, the header has 3 columns");
  CHECK(error_of([&] { nn::plot_training_csv(dir.file("none.csv"), dir.file("x.png")); }) ==
        dir.file("none.csv") + ": cannot open the training log");
  CHECK(error_of([&] { nn::draw_line_plot({}); }) == "draw_line_plot: no panel to draw");
}
