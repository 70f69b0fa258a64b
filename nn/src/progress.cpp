// The progress bar and the CSV metrics log.
#include <edifice/core/error.hpp>
#include <edifice/nn/progress.hpp>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>

namespace edifice::nn {

std::string format_metric(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Inf" : "-Inf";
  if (v == 0 || std::abs(v) >= 1e-3) return fmt::format("{:.4f}", v);
  return fmt::format("{:.4e}", v);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<std::int64_t>(seconds);
  const std::int64_t h = total / 3600, m = (total % 3600) / 60, s = total % 60;
  if (h > 0) return fmt::format("{}:{:02}:{:02}", h, m, s);
  return fmt::format("{:02}:{:02}", m, s);
}

bool is_terminal(const std::ostream& out) {
  if (&out == &std::cout) return ::isatty(STDOUT_FILENO) == 1;
  if (&out == &std::cerr || &out == &std::clog) return ::isatty(STDERR_FILENO) == 1;
  return false;
}

ProgressBar::ProgressBar(std::ostream& out, bool is_tty, ProgressOptions options)
    : out_(out), tty_(is_tty), options_(std::move(options)) {
  if (options_.bar_width < 1)
    fail("ProgressBar: bar_width must be >= 1, got {}", options_.bar_width);
  if (options_.line_every < 1)
    fail("ProgressBar: line_every must be >= 1, got {}", options_.line_every);
  if (!(options_.smoothing > 0 && options_.smoothing <= 1))
    fail("ProgressBar: smoothing must be in (0, 1], got {}", options_.smoothing);
  if (!(options_.min_interval_s >= 0))
    fail("ProgressBar: min_interval_s must be >= 0, got {}", options_.min_interval_s);
}

double ProgressBar::now() const {
  if (options_.clock) return options_.clock();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void ProgressBar::start(std::string title, std::int64_t total, std::int64_t initial) {
  title_ = std::move(title);
  total_ = std::max<std::int64_t>(total, 0);
  initial_ = initial;
  start_time_ = now();
  last_sample_time_ = start_time_;
  last_sample_done_ = initial;
  ema_ = 0;
  ema_count_ = 0;
  last_draw_time_ = -1;
  last_line_done_ = initial;
  last_done_ = initial;
  last_width_ = 0;
  line_open_ = false;
}

void ProgressBar::sample_rate(std::int64_t done, double t) {
  const double dt = t - last_sample_time_;
  if (dt <= 0 || done <= last_sample_done_) return;
  const double rate = static_cast<double>(done - last_sample_done_) / dt;
  ema_ = options_.smoothing * rate + (1 - options_.smoothing) * ema_;
  ++ema_count_;
  last_sample_time_ = t;
  last_sample_done_ = done;
}

std::string ProgressBar::render(std::int64_t done, const NamedValues& values, double t) const {
  std::string s = title_;
  if (!s.empty()) s += ' ';
  if (total_ > 0) {
    s += fmt::format("{}/{}", done, total_);
    const std::int64_t clamped = std::clamp<std::int64_t>(done, 0, total_);
    if (tty_) {
      const int w = options_.bar_width;
      const auto filled = static_cast<int>(clamped * w / total_);
      std::string bar(static_cast<std::size_t>(w), '.');
      for (int i = 0; i < filled; ++i) bar[static_cast<std::size_t>(i)] = '=';
      if (filled > 0 && clamped < total_) bar[static_cast<std::size_t>(filled - 1)] = '>';
      s += " [" + bar + "]";
    }
    s += fmt::format(" {:>3}%", clamped * 100 / total_);
  } else {
    s += fmt::format("{}", done);
  }
  // The rate with tqdm's bias correction of the moving average.
  double rate = -1;
  if (ema_count_ > 0) rate = ema_ / (1 - std::pow(1 - options_.smoothing, ema_count_));
  if (rate < 0)
    s += " | ? it/s";
  else if (rate >= 1 / 1.005 || rate == 0)  // never "1.00 s/it" from rounding near 1 it/s
    s += fmt::format(" | {:.1f} it/s", rate);
  else
    s += fmt::format(" | {:.2f} s/it", 1 / rate);
  const double elapsed = t - start_time_;
  s += " | " + format_duration(elapsed);
  if (total_ > 0) {
    const double remaining =
        rate > 0 ? static_cast<double>(std::max<std::int64_t>(total_ - done, 0)) / rate
                 : (done >= total_ ? 0.0 : -1.0);
    s += "<" + format_duration(remaining);
  }
  if (!values.empty()) {
    s += " |";
    for (std::size_t i = 0; i < values.size(); ++i)
      s +=
          fmt::format("{} {}: {}", i ? " -" : "", values[i].first, format_metric(values[i].second));
  }
  return s;
}

void ProgressBar::draw(std::int64_t done, const NamedValues& values, double t, bool final) {
  const std::string text = render(done, values, t);
  if (tty_) {
    out_ << '\r' << text;
    if (text.size() < last_width_) out_ << std::string(last_width_ - text.size(), ' ');
    last_width_ = text.size();
    line_open_ = !final;
    if (final) out_ << '\n';
  } else {
    out_ << text << '\n';
  }
  out_.flush();
  last_draw_time_ = t;
}

void ProgressBar::update(std::int64_t done, const NamedValues& values) {
  last_done_ = done;
  if (total_ > 0 && done >= total_) return;  // finish() draws the last state
  const double t = now();
  if (tty_) {
    if (last_draw_time_ >= 0 && t - last_draw_time_ < options_.min_interval_s) return;
  } else {
    if (done % options_.line_every != 0 || done == last_line_done_) return;
    last_line_done_ = done;
  }
  sample_rate(done, t);
  draw(done, values, t, false);
}

void ProgressBar::finish(const NamedValues& values) {
  const double t = now();
  sample_rate(last_done_, t);
  draw(last_done_, values, t, true);
  line_open_ = false;
  last_width_ = 0;
}

void ProgressBar::message(const std::string& line) {
  if (tty_ && line_open_) out_ << '\r' << std::string(last_width_, ' ') << '\r';
  out_ << line << '\n';
  out_.flush();
  line_open_ = false;
  last_width_ = 0;
  last_draw_time_ = -1;
}

namespace {

std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);
}

}  // namespace

CsvLogger::CsvLogger(const std::string& path, std::vector<std::string> columns, bool append,
                     std::int64_t flush_every)
    : path_(path), columns_(columns.size()), flush_every_(flush_every) {
  if (flush_every < 1) fail("CsvLogger: flush_every must be >= 1, got {}", flush_every);
  header_ = "epoch,step";
  for (const std::string& c : columns) {
    if (c.find_first_of(",\"\n\r") != std::string::npos)
      fail("CsvLogger: column name \"{}\" must not contain commas, quotes or newlines", c);
    header_ += "," + c;
  }
  bool keep = false;
  if (append) {
    std::ifstream existing(path);
    std::string first;
    if (existing && std::getline(existing, first)) {
      if (first != header_)
        fail("CsvLogger: cannot append to \"{}\": its header is\n  {}\nbut this run logs\n  {}",
             path, first, header_);
      keep = true;
    }
  }
  file_.open(path, keep ? std::ios::app : std::ios::trunc);
  if (!file_) fail("CsvLogger: cannot open \"{}\" for writing: {}", path, std::strerror(errno));
  if (!keep) {
    file_ << header_ << '\n';
    file_.flush();
  }
}

CsvLogger::~CsvLogger() {
  if (file_.is_open()) file_.flush();
}

void CsvLogger::row(std::int64_t epoch, std::int64_t step, const std::vector<double>& values,
                    const std::vector<bool>& present) {
  if (values.size() != columns_)
    fail("CsvLogger: {} values given for {} columns", values.size(), columns_);
  if (!present.empty() && present.size() != columns_)
    fail("CsvLogger: {} presence flags given for {} columns", present.size(), columns_);
  std::string line = fmt::format("{},{}", epoch, step);
  for (std::size_t i = 0; i < values.size(); ++i) {
    line += ',';
    if (present.empty() || present[i]) line += csv_number(values[i]);
  }
  file_ << line << '\n';
  if (++pending_ >= flush_every_) flush();
}

void CsvLogger::flush() {
  file_.flush();
  pending_ = 0;
  if (!file_) fail("CsvLogger: writing \"{}\" failed", path_);
}

}  // namespace edifice::nn
