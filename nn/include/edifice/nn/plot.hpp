#pragma once
/// \file
/// Plots people would rather look at than read: labelled heatmaps (axes, tick labels, colour
/// bar, title) and line plots, drawn into an RGB image and written as PNG. The training-curve
/// plot of a trainer's CSV log is one call:
///
///   trainer.fit(data, {.csv_path = "metrics.csv", .csv_every = nn::FitOptions::CsvEvery::step});
///   nn::plot_training_csv("metrics.csv", "training_curves.png");
///
/// Drawing is Edifice's own (a small raster canvas and a 5x9 bitmap font covering printable
/// ASCII); PNG compression is zlib's. docs/dependencies.md says why. Output is deterministic:
/// the same data give byte-identical files.

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace edifice::nn {

/// An 8-bit RGB image, rows top to bottom.
struct Image {
  int width = 0;
  int height = 0;
  /// width * height * 3 bytes.
  std::vector<std::uint8_t> rgb;
};

/// Writes `image` as a PNG file (8-bit RGB, zlib-compressed), atomically (atomic_file.hpp).
/// Throws edifice::Error naming the path if it cannot be written.
void write_png(const std::string& path, const Image& image);

/// A labelled position on an axis, in data units (for heatmaps: a column or row index, ticks
/// at cell centres; ticks off the map are not drawn).
struct Tick {
  double at = 0;
  std::string label;
};

struct HeatmapOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<Tick> x_ticks;
  std::vector<Tick> y_ticks;
  std::string colour_bar_label;
  /// Colour-scale limits; NaN: the values' minimum and maximum.
  double vmin = std::numeric_limits<double>::quiet_NaN();
  double vmax = std::numeric_limits<double>::quiet_NaN();
  /// Size of one cell in pixels.
  int cell_width = 12;
  int cell_height = 12;
};

/// Draws `values` (rows x cols, row-major, row 0 at the top) in a perceptually ordered colour
/// map (dark blue - teal - yellow, like viridis) with both axes, their ticks and labels, a
/// colour bar with its scale, and the title. NaN cells are grey. Throws edifice::Error if the
/// sizes do not match or are not positive.
Image draw_heatmap(std::span<const double> values, int rows, int cols,
                   const HeatmapOptions& options = {});

/// One line of a line plot. NaN values leave gaps.
struct Series {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;
  /// Draw a marker at every point (for sparse series such as per-epoch validation values).
  bool markers = false;
  /// More than this many points: the raw values are drawn faint and a centred moving average
  /// (window points / 40) over them, so the trend shows through the batch-to-batch noise.
  std::size_t smooth_above = 200;
};

/// A panel: series sharing the x axis with their own y axis.
struct Panel {
  std::string y_label;
  /// Logarithmic y axis (ignored, falling back to linear, if a value is <= 0).
  bool log_y = false;
  std::vector<Series> series;
};

struct LinePlotOptions {
  std::string title;
  std::string x_label;
  int width = 1000;
  int panel_height = 280;
};

/// Draws panels stacked vertically over a shared x axis, each with ticks, grid lines, a y
/// label and a legend. Throws edifice::Error if there is no panel or a series' x and y differ
/// in length.
Image draw_line_plot(const std::vector<Panel>& panels, const LinePlotOptions& options = {});

/// Reads a CSV log written by Trainer::fit (FitOptions::csv_path; per step or per epoch) and
/// writes its training curves to `png_path`: the loss (log scale when positive), then the
/// metrics, then the learning rate, against the global step; validation columns ("val_*") are
/// drawn with markers next to their training series. Throws edifice::Error naming the file and
/// line if the CSV cannot be read or is not such a log.
void plot_training_csv(const std::string& csv_path, const std::string& png_path,
                       const std::string& title = "Training curves");

}  // namespace edifice::nn
