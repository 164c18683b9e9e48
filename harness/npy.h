// NumPy .npy files, format version 1.0, little-endian, C order. Narrow float formats (bf16, fp16,
// fp8) are stored as their raw unsigned bits ('<u2', '|u1'); the logical dtype travels in the
// vectors manifest, not in the file.
#pragma once

#include <string>

#include "harness/tensor.h"

namespace gauge::npy {

// '<f4', '<f8', '<u2', '|u1', '<i4', ...: the descr a tensor of `dtype` is stored with.
std::string storage_descr(DType dtype);

// The complete file contents (header and data) for `tensor`.
std::string encode(const HostTensor& tensor);

struct Array {
  std::string descr;
  Shape shape;
  std::string data;  // raw little-endian bytes, C order
};

// Parses .npy bytes; throws UsageError naming `what` (the file) on anything malformed, a Fortran-order
// array, or a version other than 1.0/2.0.
Array decode(const std::string& bytes, const std::string& what);
Array read_file(const std::string& path);

// Builds a HostTensor of logical `dtype` from an array whose descr must be storage_descr(dtype) and
// whose shape must be `shape`; UsageError otherwise.
HostTensor to_tensor(const Array& array, const std::string& name, DType dtype, const Shape& shape,
                     const std::string& what);

}  // namespace gauge::npy
