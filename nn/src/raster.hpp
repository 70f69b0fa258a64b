#pragma once
// Internal: the raster canvas, bitmap font and colour map the plots draw with (plot.cpp).

#include <edifice/nn/plot.hpp>

#include <array>
#include <cstdint>
#include <string_view>

namespace edifice::nn::raster {

struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
};

/// `c` mixed with white: amount 0 keeps c, 1 gives white.
Rgb faded(Rgb c, double amount);

/// A value in [0, 1] (clamped) in the viridis-like colour map; NaN gives grey.
Rgb heat_colour(double t);

enum class Align { start, centre, end };

/// Glyph cell of the bitmap font at scale 1: 5x9 pixels (cap height 7, descenders 2) plus one
/// pixel of spacing.
inline constexpr int kGlyphWidth = 5, kGlyphHeight = 9, kCapHeight = 7, kAdvance = 6;

class Canvas {
 public:
  Canvas(int width, int height, Rgb background);

  int width() const { return image_.width; }
  int height() const { return image_.height; }
  void pixel(int x, int y, Rgb c);
  /// Fills [x0, x1) x [y0, y1), clipped to the canvas.
  void fill_rect(int x0, int y0, int x1, int y1, Rgb c);
  /// Rectangle outline, `thickness` pixels inwards.
  void frame(int x0, int y0, int x1, int y1, Rgb c, int thickness = 1);
  /// A line `thickness` pixels wide (square pen), clipped to [clip_x0, clip_x1) x ... .
  void line(double x0, double y0, double x1, double y1, Rgb c, int thickness,
            std::array<int, 4> clip);
  /// Text in the bitmap font at integer `scale`, anchored at (x, y) by `h` (start = left) and
  /// `v` (start = top of the capitals, centre = their middle). Vertical text reads bottom to
  /// top (rotated 90 degrees counter-clockwise); the anchors then refer to the rotated box.
  void text(int x, int y, std::string_view s, Rgb c, int scale, Align h, Align v,
            bool vertical = false);

  Image take() && { return std::move(image_); }

 private:
  Image image_;
};

/// Width in pixels of `s` drawn at `scale` (no trailing spacing).
int text_width(std::string_view s, int scale);

}  // namespace edifice::nn::raster
