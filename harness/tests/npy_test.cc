#include <gtest/gtest.h>

#include "harness/error.h"
#include "harness/npy.h"

namespace gauge {
namespace {

TEST(Npy, HeaderIsNumpyFormatOneAlignedTo64) {
  HostTensor t("x", DType::f32, {2, 3});
  const std::string bytes = npy::encode(t);
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
  EXPECT_EQ(bytes[6], 1);
  EXPECT_EQ(bytes[7], 0);
  const size_t header_length = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + header_length) % 64, 0u);
  const std::string header = bytes.substr(10, header_length);
  EXPECT_NE(header.find("'descr': '<f4'"), std::string::npos) << header;
  EXPECT_NE(header.find("'shape': (2, 3)"), std::string::npos) << header;
  EXPECT_EQ(header.back(), '\n');
  EXPECT_EQ(bytes.size(), 10 + header_length + 24);
}

TEST(Npy, OneDimensionalShapeIsAOneTuple) {
  const std::string bytes = npy::encode(HostTensor("x", DType::bf16, {5}));
  EXPECT_NE(bytes.find("'shape': (5,)"), std::string::npos);
  EXPECT_NE(bytes.find("'descr': '<u2'"), std::string::npos) << "bf16 travels as raw bits";
}

TEST(Npy, RoundTripKeepsBitsShapeAndDtype) {
  HostTensor t("y", DType::f16, {3, 1, 2});
  for (size_t i = 0; i < 6; ++i) t.view<uint16_t>()[i] = static_cast<uint16_t>(0x7C01 + i);  // NaN payloads too
  const npy::Array a = npy::decode(npy::encode(t), "mem");
  EXPECT_EQ(a.descr, "<u2");
  EXPECT_EQ(a.shape, (Shape{3, 1, 2}));
  const HostTensor back = npy::to_tensor(a, "y", DType::f16, {3, 1, 2}, "mem");
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(back.view<uint16_t>()[i], t.view<uint16_t>()[i]);
}

TEST(Npy, WrongDtypeOrShapeIsBadInput) {
  const npy::Array a = npy::decode(npy::encode(HostTensor("x", DType::f32, {4})), "mem");
  EXPECT_THROW(npy::to_tensor(a, "x", DType::f64, {4}, "mem"), UsageError);
  EXPECT_THROW(npy::to_tensor(a, "x", DType::f32, {2, 2}, "mem"), UsageError);
  EXPECT_NO_THROW(npy::to_tensor(a, "x", DType::f32, {4}, "mem"));
}

TEST(Npy, MalformedFilesAreBadInput) {
  EXPECT_THROW(npy::decode("not numpy at all", "x"), UsageError);
  std::string truncated = npy::encode(HostTensor("x", DType::f32, {8}));
  truncated.resize(truncated.size() - 4);
  EXPECT_THROW(npy::decode(truncated, "x"), UsageError);
  EXPECT_THROW(npy::read_file("/nonexistent/file.npy"), UsageError);
}

}  // namespace
}  // namespace gauge
