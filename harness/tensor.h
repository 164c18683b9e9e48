// A host tensor: dtype, shape and a counted byte buffer. Narrow float formats (bf16, fp16, fp8) are
// stored as their raw unsigned bits; callers view them as uint16_t / uint8_t.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "harness/dtype.h"
#include "harness/memory.h"

namespace gauge {

using Shape = std::vector<int64_t>;

int64_t element_count(const Shape& shape);
std::string shape_string(const Shape& shape);  // "[4096, 4096]"
// Row-major coordinates of a flat index, as "[i, j]".
std::string coordinates_string(const Shape& shape, int64_t flat_index);

class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(std::string name, DType dtype, Shape shape)
      : name_(std::move(name)),
        dtype_(dtype),
        shape_(std::move(shape)),
        bytes_(static_cast<size_t>(element_count(shape_)) * dtype_size(dtype)) {}

  const std::string& name() const { return name_; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return element_count(shape_); }
  size_t size_bytes() const { return bytes_.size(); }
  void* data() { return bytes_.data(); }
  const void* data() const { return bytes_.data(); }

  template <class T>
  std::span<T> view() {
    return {reinterpret_cast<T*>(bytes_.data()), bytes_.size() / sizeof(T)};
  }
  template <class T>
  std::span<const T> view() const {
    return {reinterpret_cast<const T*>(bytes_.data()), bytes_.size() / sizeof(T)};
  }
  double at_as_double(int64_t i) const { return load_as_double(dtype_, bytes_.data(), static_cast<size_t>(i)); }

 private:
  std::string name_;
  DType dtype_ = DType::f32;
  Shape shape_;
  mem::HostVector<unsigned char> bytes_;
};

}  // namespace gauge
