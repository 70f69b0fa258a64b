#include <edifice/core/tensor.hpp>
#include <edifice/core/tensor_xt.hpp>

#include <catch2/catch.hpp>

#include <xtensor/xmath.hpp>
#include "test_util.hpp"

#include <cstdint>

using namespace edifice;
using edifice::test::error_of;

TEST_CASE("tensors are zeroed, 64-byte aligned and row-major", "[tensor]") {
  for (DType d : kAllDTypes) {
    Tensor t(d, {3, 5});
    CHECK(reinterpret_cast<std::uintptr_t>(t.raw_data()) % 64 == 0);
    CHECK(t.numel() == 15);
    CHECK(t.nbytes() == 15 * dtype_size(d));
    for (std::int64_t i = 0; i < t.numel(); ++i) CHECK(t.get_as_double(i) == 0.0);
  }
  auto t = Tensor::from_vector<float>({2, 3}, {0, 1, 2, 3, 4, 5});
  CHECK(t.at<float>({1, 0}) == 3.0f);
  CHECK(t.at<float>({0, 2}) == 2.0f);
  t.at<float>({1, 2}) = 9.0f;
  CHECK(t.data<float>()[5] == 9.0f);
}

TEST_CASE("copies share storage, clone does not", "[tensor]") {
  auto a = Tensor::full(DType::i32, {4}, 7);
  Tensor shared = a;
  Tensor deep = a.clone();
  a.data<std::int32_t>()[0] = 1;
  CHECK(shared.data<std::int32_t>()[0] == 1);
  CHECK(deep.data<std::int32_t>()[0] == 7);
  CHECK(deep.bitwise_equal(Tensor::full(DType::i32, {4}, 7)));
}

TEST_CASE("reshape, cast and printing", "[tensor]") {
  auto t = Tensor::from_vector<double>({2, 2}, {1.5, -2.5, 3, 4});
  CHECK(t.reshape({4}).shape() == Shape{4});
  auto i = t.cast(DType::i64);
  CHECK(i.at<std::int64_t>({0, 1}) == -2);
  CHECK(t.to_string() == "f64[2,2]{1.5, -2.5, 3, 4}");
  CHECK(Tensor::full(DType::u8, {20}, 1).to_string(3) == "u8[20]{1, 1, 1, ... (17 more)}");
  CHECK(Tensor::scalar<float>(2.0f).rank() == 0);
}

TEST_CASE("tensor errors say what is wrong", "[tensor]") {
  auto t = Tensor::from_vector<float>({2, 3}, {0, 1, 2, 3, 4, 5});
  CHECK(error_of([&] {
          t.at<float>({2, 0});
        }) == "Tensor::at: index 2 on axis 0 is out of range for shape [2,3]");
  CHECK(error_of([&] { t.at<float>({1}); }) ==
        "Tensor::at: 1 indices given for a rank-2 tensor of shape [2,3]");
  CHECK(error_of([&] { t.data<double>(); }) ==
        "Tensor::data: the tensor holds f32 but f64 was requested");
  CHECK(error_of([&] { t.reshape({4}); }) ==
        "Tensor::reshape: cannot reshape [2,3] (6 elements) to [4] (4 elements)");
  CHECK(error_of([&] {
          Tensor(DType::f32, {2, -1});
        }) == "Tensor: shape [2,?] has a negative or dynamic extent; tensors hold concrete data");
  CHECK(error_of([&] {
          Tensor::from_vector<float>({3}, {1, 2});
        }) == "Tensor::from_vector: 2 values given for shape [3] (3 elements)");
}

TEST_CASE("slice_rows views share the buffer and refuse misaligned or outside ranges", "[tensor]") {
  Tensor t(DType::f32, {6, 16});  // 64-byte rows: every row starts aligned
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set_from_double(i, static_cast<double>(i));
  Tensor view = t.slice_rows(2, 3);
  CHECK(view.shape() == Shape{3, 16});
  CHECK(view.get_as_double(0) == 32);
  CHECK(view.get_as_double(47) == 79);
  CHECK(reinterpret_cast<std::uintptr_t>(view.raw_data()) % Tensor::kAlignment == 0);
  view.set_from_double(1, -1);  // writes go through to the parent
  CHECK(t.get_as_double(33) == -1);
  t = Tensor();  // the view keeps the buffer alive
  CHECK(view.get_as_double(2) == 34);
  CHECK(Tensor(DType::f32, {6, 16}).slice_rows(6, 0).numel() == 0);

  Tensor odd(DType::f32, {4, 3});  // 12-byte rows
  CHECK(error_of([&] { odd.slice_rows(1, 2); }) ==
        "Tensor::slice_rows: rows from 1 of [4,3] start 12 bytes in, not on a 64-byte boundary");
  CHECK(error_of([&] { odd.slice_rows(2, 3); }) ==
        "Tensor::slice_rows: rows [2, 5) are outside [4,3] (axis 0 has 4)");
  CHECK(error_of([&] { odd.slice_rows(-1, 1); }) ==
        "Tensor::slice_rows: rows [-1, 0) are outside [4,3] (axis 0 has 4)");
  CHECK(error_of([&] { Tensor::scalar(1.0f).slice_rows(0, 1); }) ==
        "Tensor::slice_rows: a rank-0 tensor has no rows");
}

TEST_CASE("xtensor views alias the tensor's buffer", "[tensor]") {
  auto t = Tensor::from_vector<float>({2, 3}, {0, 1, 2, 3, 4, 5});
  auto v = xt_view<float>(t);
  CHECK(v(1, 2) == 5.0f);
  v(0, 0) = 10.0f;
  CHECK(t.at<float>({0, 0}) == 10.0f);
  CHECK(xt::sum(v)() == Approx(25.0f));
}
