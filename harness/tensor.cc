#include "harness/tensor.h"

#include <sstream>

namespace gauge {

int64_t element_count(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const Shape& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

std::string coordinates_string(const Shape& shape, int64_t flat_index) {
  Shape coordinates(shape.size());
  for (size_t k = shape.size(); k-- > 0;) {
    const int64_t extent = shape[k] > 0 ? shape[k] : 1;
    coordinates[k] = flat_index % extent;
    flat_index /= extent;
  }
  return shape_string(coordinates);
}

}  // namespace gauge
