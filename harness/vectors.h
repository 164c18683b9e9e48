// Conformance vectors: every case point's inputs and reference outputs as .npy files plus one
// manifest.json, so implementations outside gauge (PyTorch, Triton, JAX) can be held to the same
// cases and the same tolerance rules; and the check of a candidate's outputs against them.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

namespace gauge::vectors {

inline constexpr int kManifestSchemaVersion = 1;

struct ExportOptions {
  std::string suite;
  std::string filter;
  bool full = false;  // false: the small (quick) points only
  std::string out_dir;
  uint64_t seed = 0;
};

struct ExportSummary {
  int cases = 0;
  int files = 0;
};

// Deterministic: the same commit and options write byte-identical files. The manifest is written
// last, so an interrupted export leaves no manifest behind. Throws UsageError on bad input.
ExportSummary export_vectors(const ExportOptions& options, std::ostream& progress);

// Checks the candidate's output files (same names as the reference outputs) against DIR's manifest:
// one line per case on `out`, then "N passed, N failed, N missing". Returns the exit code: 0 when
// every case passes, 1 when any fails or is missing, 2 on bad input (no manifest, another schema
// version, a candidate file of the wrong shape or dtype: one line each on `errors`).
int check_vectors(const std::string& dir, const std::string& candidate_dir, std::ostream& out, std::ostream& errors);

}  // namespace gauge::vectors
