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
  CHECK(error_of([&] { t.at<float>({2, 0}); }) ==
        "Tensor::at: index 2 on axis 0 is out of range for shape [2,3]");
  CHECK(error_of([&] { t.at<float>({1}); }) ==
        "Tensor::at: 1 indices given for a rank-2 tensor of shape [2,3]");
  CHECK(error_of([&] { t.data<double>(); }) ==
        "Tensor::data: the tensor holds f32 but f64 was requested");
  CHECK(error_of([&] { t.reshape({4}); }) ==
        "Tensor::reshape: cannot reshape [2,3] (6 elements) to [4] (4 elements)");
  CHECK(error_of([&] { Tensor(DType::f32, {2, -1}); }) ==
        "Tensor: shape [2,?] has a negative or dynamic extent; tensors hold concrete data");
  CHECK(error_of([&] { Tensor::from_vector<float>({3}, {1, 2}); }) ==
        "Tensor::from_vector: 2 values given for shape [3] (3 elements)");
}

TEST_CASE("xtensor views alias the tensor's buffer", "[tensor]") {
  auto t = Tensor::from_vector<float>({2, 3}, {0, 1, 2, 3, 4, 5});
  auto v = xt_view<float>(t);
  CHECK(v(1, 2) == 5.0f);
  v(0, 0) = 10.0f;
  CHECK(t.at<float>({0, 0}) == 10.0f);
  CHECK(xt::sum(v)() == Approx(25.0f));
}
