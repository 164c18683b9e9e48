#include "harness/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "harness/error.h"

namespace gauge::npy {

std::string storage_descr(DType dtype) {
  switch (dtype) {
    case DType::f64: return "<f8";
    case DType::f32:
    case DType::tf32: return "<f4";
    case DType::f16:
    case DType::bf16:
    case DType::u16: return "<u2";
    case DType::e4m3:
    case DType::e5m2:
    case DType::u8: return "|u1";
    case DType::u32: return "<u4";
    case DType::i32: return "<i4";
    case DType::i64: return "<i8";
  }
  return "?";
}

std::string encode(const HostTensor& tensor) {
  std::ostringstream dict;
  dict << "{'descr': '" << storage_descr(tensor.dtype()) << "', 'fortran_order': False, 'shape': (";
  const Shape& shape = tensor.shape();
  for (size_t i = 0; i < shape.size(); ++i) dict << (i ? ", " : "") << shape[i];
  dict << (shape.size() == 1 ? ",), }" : "), }");  // a 1-tuple needs its comma in Python
  std::string header = dict.str();
  // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64 and
  // ended by a newline, so the data starts aligned.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  const auto length = static_cast<uint16_t>(header.size());
  out += static_cast<char>(length & 0xFF);
  out += static_cast<char>(length >> 8);
  out += header;
  out.append(static_cast<const char*>(tensor.data()), tensor.size_bytes());
  return out;
}

Array decode(const std::string& bytes, const std::string& what) {
  auto bad = [&](const std::string& why) { return UsageError("'" + what + "' is not a valid .npy file: " + why); };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw bad("no NumPy magic");
  const auto major = static_cast<unsigned char>(bytes[6]);
  size_t header_length = 0, offset = 0;
  if (major == 1) {
    header_length = static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 && bytes.size() >= 12) {
    for (int i = 0; i < 4; ++i) header_length |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    throw bad("unsupported format version " + std::to_string(major));
  }
  if (bytes.size() < offset + header_length) throw bad("truncated header");
  const std::string header = bytes.substr(offset, header_length);
  std::smatch m;
  static const std::regex descr_re(R"('descr'\s*:\s*'([^']+)')");
  static const std::regex order_re(R"('fortran_order'\s*:\s*(True|False))");
  static const std::regex shape_re(R"('shape'\s*:\s*\(([^)]*)\))");
  Array array;
  if (!std::regex_search(header, m, descr_re)) throw bad("header has no descr");
  array.descr = m[1];
  if (!std::regex_search(header, m, order_re)) throw bad("header has no fortran_order");
  if (m[1] == "True") throw bad("Fortran-order arrays are not supported; save with C order");
  if (!std::regex_search(header, m, shape_re)) throw bad("header has no shape");
  std::stringstream dims(m[1].str());
  std::string item;
  while (std::getline(dims, item, ',')) {
    const size_t start = item.find_first_not_of(" \t");
    if (start == std::string::npos) continue;
    try {
      array.shape.push_back(std::stoll(item.substr(start)));
    } catch (const std::exception&) {
      throw bad("bad shape entry '" + item + "'");
    }
  }
  array.data = bytes.substr(offset + header_length);
  int64_t item_size = 0;
  if (array.descr.size() >= 3) item_size = std::atoi(array.descr.c_str() + 2);
  if (item_size <= 0) throw bad("unsupported descr '" + array.descr + "'");
  if (static_cast<int64_t>(array.data.size()) != element_count(array.shape) * item_size) {
    throw bad("data holds " + std::to_string(array.data.size()) + " bytes, the header promises " +
              std::to_string(element_count(array.shape) * item_size));
  }
  return array;
}

Array read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot read '" + path + "'");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return decode(bytes.str(), path);
}

HostTensor to_tensor(const Array& array, const std::string& name, DType dtype, const Shape& shape,
                     const std::string& what) {
  if (array.descr != storage_descr(dtype)) {
    throw UsageError("'" + what + "' has dtype " + array.descr + ", expected " + storage_descr(dtype) + " (" +
                     std::string(dtype_name(dtype)) + ")");
  }
  if (array.shape != shape) {
    throw UsageError("'" + what + "' has shape " + shape_string(array.shape) + ", expected " + shape_string(shape));
  }
  HostTensor t(name, dtype, shape);
  std::memcpy(t.data(), array.data.data(), t.size_bytes());
  return t;
}

}  // namespace gauge::npy
