#pragma once
/// \file
/// Training progress reporting: a terminal progress bar and a CSV metrics log. Both write to
/// what they are given (an std::ostream, a path), so tests capture them exactly.
///
/// The bar, on a terminal (`is_tty`), redraws one line in place with '\r', at most every
/// `min_interval_s` (0.1 s, tqdm's default) and always at the end (bar_width 20 here):
///
///   Epoch 2/10 37/100 [======>.............]  37% | 12.5 it/s | 00:03<00:05 | loss: 0.4123
///
/// Elsewhere (a pipe, a CI log) it prints plain lines instead, every `line_every` steps and at
/// the end, without the bar:
///
///   Epoch 2/10 50/100  50% | 12.5 it/s | 00:04<00:04 | loss: 0.4123 - accuracy: 0.8125
///
/// Fields: steps done / total, the percentage (floored), the smoothed rate ("it/s", or "s/it"
/// below 1 it/s; "? it/s" before the first measurement), elapsed<remaining time (mm:ss, or
/// h:mm:ss from one hour; "?" when unknown), then the values given, "name: value" joined by
/// " - ", formatted with 4 decimals (4 significant digits in scientific notation below 1e-3;
/// NaN and Inf as "NaN", "Inf", "-Inf"). With an unknown total (0) there is no bar, percentage
/// or remaining time: "Epoch 2 37 | 12.5 it/s | 00:03 | loss: 0.4123".
///
/// The rate is an exponential moving average of the rate between draws, with weight
/// `smoothing` on the latest measurement and tqdm's bias correction, so early values are not
/// biased towards zero.

#include <cstdint>
#include <fstream>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace edifice::nn {

/// Values shown after the timing fields, in order: {"loss", 0.41}, {"accuracy", 0.81}, ...
using NamedValues = std::vector<std::pair<std::string, double>>;

struct ProgressOptions {
  /// Characters between the brackets.
  int bar_width = 30;
  /// Terminal: minimum seconds between redraws.
  double min_interval_s = 0.1;
  /// Plain output: a line every this many steps (and at the end). >= 1.
  std::int64_t line_every = 50;
  /// Weight of the latest rate measurement in the moving average, in (0, 1]; 1 = no smoothing.
  double smoothing = 0.3;
  /// Seconds on a monotonic clock; empty means std::chrono::steady_clock. Tests inject one.
  std::function<double()> clock;
};

class ProgressBar {
 public:
  /// `out` must outlive the bar.
  ProgressBar(std::ostream& out, bool is_tty, ProgressOptions options = {});

  /// Starts a new bar titled `title` ("Epoch 2/10") over `total` steps (0 = unknown), with
  /// `initial` steps already done (a resumed epoch; they do not count towards the rate).
  void start(std::string title, std::int64_t total, std::int64_t initial = 0);
  /// `done` steps are complete; draws (or prints a line) when due.
  void update(std::int64_t done, const NamedValues& values);
  /// Draws the last state given to update() with `values` (which may add validation metrics)
  /// and ends the line.
  void finish(const NamedValues& values);
  /// Prints `line` on its own line without garbling the bar (on a terminal the bar line is
  /// cleared first and redrawn at the next update).
  void message(const std::string& line);

  /// The text of the bar (without '\r' or newline) for `done` steps at time `now` with the
  /// current rate estimate: what update/finish draw.
  std::string render(std::int64_t done, const NamedValues& values, double now) const;
  bool is_tty() const { return tty_; }

 private:
  double now() const;
  void sample_rate(std::int64_t done, double now);
  void draw(std::int64_t done, const NamedValues& values, double now, bool final);

  std::ostream& out_;
  bool tty_;
  ProgressOptions options_;
  std::string title_;
  std::int64_t total_ = 0, initial_ = 0;
  double start_time_ = 0;
  // Rate estimate: EMA of steps/second between samples.
  double last_sample_time_ = 0;
  std::int64_t last_sample_done_ = 0;
  double ema_ = 0;
  int ema_count_ = 0;
  // Drawing state.
  double last_draw_time_ = -1;
  std::int64_t last_line_done_ = -1;
  std::int64_t last_done_ = 0;
  std::size_t last_width_ = 0;
  bool line_open_ = false;
};

/// Formats one value as the bar does: "0.4123", "1.2340e-05", "NaN", "Inf", "-Inf".
std::string format_metric(double value);
/// "mm:ss", or "h:mm:ss" from one hour on; negative or non-finite gives "?".
std::string format_duration(double seconds);

/// Whether `out` is std::cout, std::cerr or std::clog and the matching file descriptor is a
/// terminal (isatty). Any other stream is not.
bool is_terminal(const std::ostream& out);

/// A CSV metrics log with a fixed header: "epoch,step," then `columns` (e.g. loss, accuracy,
/// val_loss, val_accuracy, lr, elapsed_s). One row per call. Numbers are written in the
/// shortest form that reads back to the same double ("0.1", "1e-05"), NaN as "nan" and
/// infinities as "inf"/"-inf"; a value marked absent is an empty cell.
class CsvLogger {
 public:
  /// Creates (truncates) `path` and writes the header, or with `append` keeps an existing file
  /// whose header is identical and adds rows to it (resumed runs); an existing file with another
  /// header is an error naming both headers. Rows are flushed every `flush_every` rows (>= 1)
  /// and by flush() and the destructor.
  CsvLogger(const std::string& path, std::vector<std::string> columns, bool append = false,
            std::int64_t flush_every = 50);
  ~CsvLogger();
  CsvLogger(const CsvLogger&) = delete;
  CsvLogger& operator=(const CsvLogger&) = delete;

  /// A row: epoch, step, then one value per column; `present[i] == false` leaves column i
  /// empty (e.g. validation columns on rows without validation). `present` may be empty (all
  /// present).
  void row(std::int64_t epoch, std::int64_t step, const std::vector<double>& values,
           const std::vector<bool>& present = {});
  void flush();
  const std::string& header() const { return header_; }

 private:
  std::string path_;
  std::string header_;
  std::size_t columns_ = 0;
  std::int64_t flush_every_ = 50;
  std::int64_t pending_ = 0;
  std::ofstream file_;
};

}  // namespace edifice::nn
