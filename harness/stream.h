#pragma once
// cudaStream_t is `struct CUstream_st*`; naming the struct here lets host-only code pass streams
// through without including CUDA headers (builds without CUDA never dereference it).
struct CUstream_st;
namespace gauge {
using StreamHandle = CUstream_st*;
}
