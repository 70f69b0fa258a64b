// Heatmaps, line plots and training curves (plot.hpp), drawn on the raster canvas.
#include <edifice/nn/plot.hpp>

#include "raster.hpp"

#include <edifice/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace edifice::nn {
namespace {

using raster::Align;
using raster::Canvas;
using raster::Rgb;

constexpr Rgb kWhite{255, 255, 255}, kInk{34, 34, 34}, kGrid{225, 225, 225}, kAxis{90, 90, 90};
// Text sizes (font scale): titles, then labels and ticks.
constexpr int kTitleScale = 3, kLabelScale = 2;
constexpr int kLabelHeight = raster::kCapHeight * kLabelScale;

// About `target` round-numbered positions (1, 2 or 5 times a power of ten) covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  double raw = (hi - lo) / target;
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  double step = raw / p < 1.5 ? p : raw / p < 3.5 ? 2 * p : raw / p < 7.5 ? 5 * p : 10 * p;
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step)
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

std::string tick_label(double v) {
  std::string s = fmt::format("{:.4g}", v);
  // "1e-05" -> "1e-5": shorter labels.
  auto e = s.find("e-0");
  if (e != std::string::npos) s.erase(e + 2, 1);
  return s;
}

// A colour bar at [x0, x1) x [y0, y1): vmax at the top, with ticks on its right.
void draw_colour_bar(Canvas& c, int x0, int y0, int x1, int y1, double vmin, double vmax,
                     const std::string& label) {
  for (int y = y0; y < y1; ++y) {
    double t = y1 - 1 == y0 ? 1.0 : double(y1 - 1 - y) / (y1 - 1 - y0);
    c.fill_rect(x0, y, x1, y + 1, raster::heat_colour(t));
  }
  c.frame(x0, y0, x1, y1, kAxis);
  int widest = 0;
  for (double v : nice_ticks(vmin, vmax, 5)) {
    if (v < vmin || v > vmax) continue;
    int y =
        vmax == vmin
            ? y0
            : static_cast<int>(std::lround(y1 - 1 - (v - vmin) / (vmax - vmin) * (y1 - 1 - y0)));
    c.fill_rect(x1, y, x1 + 5, y + 1, kAxis);
    std::string s = tick_label(v);
    widest = std::max(widest, raster::text_width(s, kLabelScale));
    c.text(x1 + 8, y, s, kInk, kLabelScale, Align::start, Align::centre);
  }
  if (!label.empty())
    c.text(x1 + 20 + widest, (y0 + y1) / 2, label, kInk, kLabelScale, Align::centre, Align::start,
           /*vertical=*/true);
}

}  // namespace

Image draw_heatmap(std::span<const double> values, int rows, int cols,
                   const HeatmapOptions& options) {
  if (rows <= 0 || cols <= 0 || values.size() != std::size_t(rows) * cols)
    fail("draw_heatmap: {} values do not fill {} rows x {} columns", values.size(), rows, cols);
  if (options.cell_width <= 0 || options.cell_height <= 0)
    fail("draw_heatmap: cell size {}x{} must be positive", options.cell_width, options.cell_height);
  double vmin = options.vmin, vmax = options.vmax;
  if (std::isnan(vmin) || std::isnan(vmax)) {
    double lo = INFINITY, hi = -INFINITY;
    for (double v : values)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    if (std::isnan(vmin)) vmin = std::isfinite(lo) ? lo : 0;
    if (std::isnan(vmax)) vmax = std::isfinite(hi) ? hi : 1;
  }
  int y_tick_width = 0, bar_tick_width = 0;
  for (const Tick& t : options.y_ticks)
    y_tick_width = std::max(y_tick_width, raster::text_width(t.label, kLabelScale));
  for (double v : nice_ticks(vmin, vmax, 5))
    bar_tick_width = std::max(bar_tick_width, raster::text_width(tick_label(v), kLabelScale));
  const int map_w = cols * options.cell_width, map_h = rows * options.cell_height;
  const int left = 24 + (options.y_label.empty() ? 0 : kLabelHeight + 12) + y_tick_width;
  const int top = options.title.empty() ? 20 : 24 + raster::kCapHeight * kTitleScale + 20;
  const int bar_x = left + map_w + 30, bar_w = 22;
  const int right = std::max(bar_x + bar_w + 8 + bar_tick_width + 12 +
                                 (options.colour_bar_label.empty() ? 0 : kLabelHeight + 12) + 12,
                             raster::text_width(options.title, kTitleScale) + 40);
  const int bottom = top + map_h + 14 + kLabelHeight + (options.x_label.empty() ? 0 : 34) + 12;
  Canvas c(right, bottom, kWhite);

  if (!options.title.empty())
    c.text(right / 2, 22, options.title, kInk, kTitleScale, Align::centre, Align::start);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < cols; ++k) {
      double v = values[std::size_t(r) * cols + k];
      double t = vmax == vmin ? (std::isnan(v) ? v : 1.0) : (v - vmin) / (vmax - vmin);
      c.fill_rect(left + k * options.cell_width, top + r * options.cell_height,
                  left + (k + 1) * options.cell_width, top + (r + 1) * options.cell_height,
                  raster::heat_colour(t));
    }
  c.frame(left - 1, top - 1, left + map_w + 1, top + map_h + 1, kAxis);
  for (const Tick& t : options.x_ticks) {
    if (!(t.at >= -0.5 && t.at <= cols - 0.5)) continue;  // off the map
    int x = left + static_cast<int>(std::lround((t.at + 0.5) * options.cell_width));
    c.fill_rect(x, top + map_h + 1, x + 1, top + map_h + 7, kAxis);
    c.text(x, top + map_h + 11, t.label, kInk, kLabelScale, Align::centre, Align::start);
  }
  for (const Tick& t : options.y_ticks) {
    if (!(t.at >= -0.5 && t.at <= rows - 0.5)) continue;
    int y = top + static_cast<int>(std::lround((t.at + 0.5) * options.cell_height));
    c.fill_rect(left - 7, y, left - 1, y + 1, kAxis);
    c.text(left - 10, y, t.label, kInk, kLabelScale, Align::end, Align::centre);
  }
  if (!options.x_label.empty())
    c.text(left + map_w / 2, top + map_h + 11 + kLabelHeight + 16, options.x_label, kInk,
           kLabelScale, Align::centre, Align::start);
  if (!options.y_label.empty())
    c.text(12, top + map_h / 2, options.y_label, kInk, kLabelScale, Align::centre, Align::start,
           /*vertical=*/true);
  draw_colour_bar(c, bar_x, top, bar_x + bar_w, top + map_h, vmin, vmax, options.colour_bar_label);
  return std::move(c).take();
}

namespace {

constexpr Rgb kPalette[] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                            {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127}};

// Centred moving average over `window` points (odd), skipping NaNs; prefix sums keep it linear
// in the number of points whatever the window.
std::vector<double> moving_average(const std::vector<double>& y, std::size_t window) {
  std::vector<double> sum(y.size() + 1, 0.0);
  std::vector<std::size_t> count(y.size() + 1, 0);
  for (std::size_t i = 0; i < y.size(); ++i) {
    bool ok = std::isfinite(y[i]);
    sum[i + 1] = sum[i] + (ok ? y[i] : 0.0);
    count[i + 1] = count[i] + ok;
  }
  std::vector<double> out(y.size(), NAN);
  const std::size_t half = window / 2;
  for (std::size_t i = 0; i < y.size(); ++i) {
    std::size_t lo = i > half ? i - half : 0, hi = std::min(y.size(), i + half + 1);
    std::size_t n = count[hi] - count[lo];
    if (n > 0 && std::isfinite(y[i])) out[i] = (sum[hi] - sum[lo]) / double(n);
  }
  return out;
}

// Maps data to pixels for one panel: x shared, y linear or log10.
struct Axes {
  int x0, y0, x1, y1;  // plot area [x0, x1) x [y0, y1)
  double xmin, xmax, ymin, ymax;
  bool log_y;
  bool integer_x;  // every x is an integer (steps): no ticks between integers
  double px(double x) const {
    return xmax == xmin ? (x0 + x1) / 2.0 : x0 + (x - xmin) / (xmax - xmin) * (x1 - 1 - x0);
  }
  double py(double y) const {
    double v = log_y ? std::log10(y) : y;
    return ymax == ymin ? (y0 + y1) / 2.0 : y1 - 1 - (v - ymin) / (ymax - ymin) * (y1 - 1 - y0);
  }
};

// y range (in axis units: log10 for log axes) of a panel, padded by 5%.
std::pair<double, double> y_range(const Panel& p, bool log_y) {
  double lo = INFINITY, hi = -INFINITY;
  for (const Series& s : p.series)
    for (double y : s.y)
      if (std::isfinite(y)) {
        double v = log_y ? std::log10(y) : y;
        lo = std::min(lo, v), hi = std::max(hi, v);
      }
  if (!std::isfinite(lo)) return {0, 1};
  if (hi == lo) return {lo - 0.5, hi + 0.5};
  double pad = (hi - lo) * 0.05;
  return {lo - pad, hi + pad};
}

// Tick positions in axis units, with their labels.
std::vector<std::pair<double, std::string>> y_ticks(const Axes& a) {
  std::vector<std::pair<double, std::string>> out;
  if (!a.log_y) {
    for (double v : nice_ticks(a.ymin, a.ymax, 5)) out.emplace_back(v, tick_label(v));
    return out;
  }
  // Decades; with fewer than two in range, also 2x and 5x; within one such step, round values.
  for (int mantissas : {1, 3}) {
    out.clear();
    for (double e = std::floor(a.ymin); e <= std::ceil(a.ymax); ++e)
      for (double m : {1.0, 2.0, 5.0}) {
        if (mantissas == 1 && m != 1.0) continue;
        double v = std::log10(m) + e;
        if (v >= a.ymin && v <= a.ymax) out.emplace_back(v, tick_label(std::pow(10.0, v)));
      }
    if (out.size() >= 2) return out;
  }
  out.clear();
  for (double v : nice_ticks(std::pow(10.0, a.ymin), std::pow(10.0, a.ymax), 4))
    if (v > 0) out.emplace_back(std::log10(v), tick_label(v));
  return out;
}

void draw_series(Canvas& c, const Axes& a, const Series& s, Rgb colour) {
  const std::array<int, 4> clip = {a.x0, a.y0, a.x1, a.y1};
  auto polyline = [&](const std::vector<double>& y, Rgb col, int thickness) {
    for (std::size_t i = 1; i < y.size(); ++i) {
      bool ok = std::isfinite(s.x[i - 1]) && std::isfinite(s.x[i]) && std::isfinite(y[i - 1]) &&
                std::isfinite(y[i]) && (!a.log_y || (y[i - 1] > 0 && y[i] > 0));
      if (ok)
        c.line(a.px(s.x[i - 1]), a.py(y[i - 1]), a.px(s.x[i]), a.py(y[i]), col, thickness, clip);
    }
  };
  if (s.y.size() > s.smooth_above) {
    polyline(s.y, raster::faded(colour, 0.65), 1);
    polyline(moving_average(s.y, s.y.size() / 80 * 2 + 1), colour, 2);
  } else {
    polyline(s.y, colour, 2);
  }
  if (s.markers)
    for (std::size_t i = 0; i < s.y.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && (!a.log_y || s.y[i] > 0)) {
        int x = static_cast<int>(std::lround(a.px(s.x[i])));
        int y = static_cast<int>(std::lround(a.py(s.y[i])));
        if (x >= a.x0 && x < a.x1 && y >= a.y0 && y < a.y1)
          c.fill_rect(x - 3, y - 3, x + 4, y + 4, colour);
      }
}

void draw_legend(Canvas& c, const Axes& a, const std::vector<Series>& series, int first_colour) {
  int widest = 0;
  for (const Series& s : series) widest = std::max(widest, raster::text_width(s.name, kLabelScale));
  const int row = kLabelHeight + 10;
  const int w = 12 + 28 + 8 + widest + 12, h = 10 + row * static_cast<int>(series.size());
  // The corner whose box covers the fewest data points (top right on a tie).
  const std::array<std::array<int, 2>, 4> corners = {{{a.x1 - w - 10, a.y0 + 10},
                                                      {a.x1 - w - 10, a.y1 - h - 10},
                                                      {a.x0 + 10, a.y0 + 10},
                                                      {a.x0 + 10, a.y1 - h - 10}}};
  std::size_t best_cover = SIZE_MAX;
  int x0 = corners[0][0], y0 = corners[0][1];
  for (const auto& [cx, cy] : corners) {
    std::size_t cover = 0;
    for (const Series& s : series)
      for (std::size_t i = 0; i < s.y.size(); ++i) {
        if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (a.log_y && s.y[i] <= 0)) continue;
        double px = a.px(s.x[i]), py = a.py(s.y[i]);
        cover += px >= cx - 4 && px < cx + w + 4 && py >= cy - 4 && py < cy + h + 4;
      }
    if (cover < best_cover) best_cover = cover, x0 = cx, y0 = cy;
  }
  c.fill_rect(x0, y0, x0 + w, y0 + h, kWhite);
  c.frame(x0, y0, x0 + w, y0 + h, kGrid);
  for (std::size_t i = 0; i < series.size(); ++i) {
    Rgb col = kPalette[(first_colour + i) % std::size(kPalette)];
    int y = y0 + 10 + static_cast<int>(i) * row + kLabelHeight / 2;
    c.fill_rect(x0 + 12, y - 1, x0 + 40, y + 1, col);
    if (series[i].markers) c.fill_rect(x0 + 23, y - 3, x0 + 30, y + 4, col);
    c.text(x0 + 48, y, series[i].name, kInk, kLabelScale, Align::start, Align::centre);
  }
}

// Grid, axes, ticks and labels of one panel; x tick labels only when `x_labels`.
void draw_panel_frame(Canvas& c, const Axes& a, const std::string& y_label, bool x_labels) {
  for (double v : nice_ticks(a.xmin, a.xmax, 8)) {
    int x = static_cast<int>(std::lround(a.px(v)));
    if (x < a.x0 || x >= a.x1 || (a.integer_x && v != std::floor(v))) continue;
    c.fill_rect(x, a.y0, x + 1, a.y1, kGrid);
    c.fill_rect(x, a.y1, x + 1, a.y1 + 6, kAxis);
    if (x_labels)
      c.text(x, a.y1 + 10, tick_label(v), kInk, kLabelScale, Align::centre, Align::start);
  }
  int widest = 0;
  for (const auto& [v, label] : y_ticks(a)) {
    int y = static_cast<int>(std::lround(
        a.ymax == a.ymin ? (a.y0 + a.y1) / 2.0
                         : a.y1 - 1 - (v - a.ymin) / (a.ymax - a.ymin) * (a.y1 - 1 - a.y0)));
    c.fill_rect(a.x0, y, a.x1, y + 1, kGrid);
    c.fill_rect(a.x0 - 6, y, a.x0, y + 1, kAxis);
    c.text(a.x0 - 10, y, label, kInk, kLabelScale, Align::end, Align::centre);
    widest = std::max(widest, raster::text_width(label, kLabelScale));
  }
  c.frame(a.x0 - 1, a.y0 - 1, a.x1 + 1, a.y1 + 1, kAxis);
  if (!y_label.empty())
    c.text(a.x0 - 22 - widest - kLabelHeight, (a.y0 + a.y1) / 2, y_label, kInk, kLabelScale,
           Align::centre, Align::start, /*vertical=*/true);
}

}  // namespace

Image draw_line_plot(const std::vector<Panel>& panels, const LinePlotOptions& options) {
  if (panels.empty()) fail("draw_line_plot: no panel to draw");
  double xmin = INFINITY, xmax = -INFINITY;
  bool integer_x = true;
  for (const Panel& p : panels)
    for (const Series& s : p.series) {
      if (s.x.size() != s.y.size())
        fail("draw_line_plot: series \"{}\" has {} x values but {} y values", s.name, s.x.size(),
             s.y.size());
      for (double x : s.x)
        if (std::isfinite(x))
          xmin = std::min(xmin, x), xmax = std::max(xmax, x), integer_x &= x == std::floor(x);
    }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1;
  const int left = 12 + kLabelHeight + 16 + 7 * raster::kAdvance * kLabelScale + 12;
  const int top = options.title.empty() ? 20 : 24 + raster::kCapHeight * kTitleScale + 24;
  const int gap = 24, n = static_cast<int>(panels.size());
  const int height = top + n * options.panel_height + (n - 1) * gap + 10 + kLabelHeight +
                     (options.x_label.empty() ? 0 : 30) + 16;
  Canvas c(options.width, height, kWhite);
  if (!options.title.empty())
    c.text(options.width / 2, 22, options.title, kInk, kTitleScale, Align::centre, Align::start);
  int colour = 0;
  for (int i = 0; i < n; ++i) {
    const Panel& p = panels[i];
    bool log_y = p.log_y;
    for (const Series& s : p.series)
      for (double y : s.y)
        if (y <= 0) log_y = false;
    auto [ymin, ymax] = y_range(p, log_y);
    const int y0 = top + i * (options.panel_height + gap);
    Axes a{left, y0,    options.width - 30, y0 + options.panel_height, xmin, xmax, ymin,
           ymax, log_y, integer_x};
    draw_panel_frame(c, a, p.y_label, /*x_labels=*/i == n - 1);
    for (std::size_t k = 0; k < p.series.size(); ++k)
      draw_series(c, a, p.series[k], kPalette[(colour + k) % std::size(kPalette)]);
    if (!p.series.empty()) draw_legend(c, a, p.series, colour);
    colour += static_cast<int>(p.series.size());
  }
  if (!options.x_label.empty())
    c.text((left + options.width - 30) / 2, height - 16 - raster::kCapHeight * kLabelScale,
           options.x_label, kInk, kLabelScale, Align::centre, Align::start);
  return std::move(c).take();
}

namespace {

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream in(line);
  std::string cell;
  while (std::getline(in, cell, ',')) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

// The columns of a trainer CSV log by name; empty cells (values a row does not have) are NaN.
std::map<std::string, std::vector<double>> read_training_csv(const std::string& path,
                                                             std::vector<std::string>& order) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the training log", path);
  std::string line;
  if (!std::getline(in, line)) fail("{}: empty file, expected a header line", path);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  order = split_csv_line(line);
  if (order.size() < 3 || order[0] != "epoch" || order[1] != "step")
    fail("{}:1: not a training log: the header is \"{}\", expected \"epoch,step,loss,...\"", path,
         line);
  std::map<std::string, std::vector<double>> columns;
  for (const std::string& name : order) columns[name];
  for (int line_no = 2; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();  // a CRLF file
    if (line.empty()) continue;
    std::vector<std::string> cells = split_csv_line(line);
    if (cells.size() != order.size())
      fail("{}:{}: {} cells, the header has {} columns", path, line_no, cells.size(), order.size());
    for (std::size_t i = 0; i < cells.size(); ++i) {
      double v = NAN;
      if (!cells[i].empty()) {
        char* end = nullptr;
        v = std::strtod(cells[i].c_str(), &end);
        if (end != cells[i].c_str() + cells[i].size())
          fail("{}:{}: column \"{}\" holds \"{}\", not a number", path, line_no, order[i],
               cells[i]);
      }
      columns[order[i]].push_back(v);
    }
  }
  if (columns["step"].empty()) fail("{}: the log has a header but no rows", path);
  return columns;
}

}  // namespace

void plot_training_csv(const std::string& csv_path, const std::string& png_path,
                       const std::string& title) {
  std::vector<std::string> order;
  auto columns = read_training_csv(csv_path, order);
  const std::vector<double>& steps = columns["step"];
  // Sparse logs (one row per epoch) get markers on every series.
  const bool sparse = steps.size() <= 60;
  auto series = [&](const std::string& name) {
    return Series{.name = name,
                  .x = steps,
                  .y = columns[name],
                  .markers = sparse || name.starts_with("val_")};
  };
  Panel loss{.y_label = "loss", .log_y = true, .series = {}};
  Panel metrics{.y_label = "metrics", .log_y = false, .series = {}};
  Panel lr{.y_label = "learning rate", .log_y = false, .series = {}};
  for (const std::string& name : order) {
    if (name == "epoch" || name == "step" || name == "elapsed_s") continue;
    if (name == "loss" || name == "val_loss")
      loss.series.push_back(series(name));
    else if (name == "lr")  // a schedule, not noisy: never smoothed
      lr.series.push_back(series(name)), lr.series.back().smooth_above = SIZE_MAX;
    else
      metrics.series.push_back(series(name));
  }
  std::vector<Panel> panels;
  for (Panel* p : {&loss, &metrics, &lr})
    if (!p->series.empty()) panels.push_back(std::move(*p));
  write_png(png_path, draw_line_plot(panels, {.title = title, .x_label = "step"}));
}

}  // namespace edifice::nn
