#include "harness/vectors.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "harness/case.h"
#include "harness/compare.h"
#include "harness/device.h"
#include "harness/error.h"
#include "harness/npy.h"
#include "harness/results.h"

namespace gauge::vectors {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // keys in the order written: readable manifests

// "precision/cast_f32_to_narrow/n=1048579/bf16" -> "precision.cast_f32_to_narrow.n1048579.bf16"
std::string file_stem(const std::string& id) {
  std::string stem;
  for (char c : id) {
    if (c == '/') {
      stem += '.';
    } else if (c == ',') {
      stem += '_';
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') {
      stem += c;
    }
  }
  return stem;
}

json tensor_entry(const HostTensor& t, const std::string& file) {
  return {{"name", t.name()},
          {"file", file},
          {"dtype", std::string(dtype_name(t.dtype()))},
          {"storage", npy::storage_descr(t.dtype())},
          {"shape", t.shape()}};
}

json params_json(const Params& params) {
  json out = json::object();
  for (const auto& [name, value] : params) {
    std::visit([&, n = name](const auto& v) { out[n] = v; }, value);
  }
  return out;
}

void ensure_directory(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw UsageError("cannot create directory '" + dir + "': " + ec.message());
}

}  // namespace

ExportSummary export_vectors(const ExportOptions& options, std::ostream& progress) {
  if (options.out_dir.empty()) throw UsageError("gauge vectors export needs --out DIR");
  const std::vector<Selection> selection = select_cases(options.suite, options.filter, !options.full);
  ensure_directory(options.out_dir);
  check_writable((fs::path(options.out_dir) / "manifest.json").string());

  const MachineInfo machine = probe_machine({});
  json manifest = {{"format", "gauge-vectors"},
                   {"schema_version", kManifestSchemaVersion},
                   {"gauge_version", machine.gauge_version},
                   {"git_commit", machine.git_commit},
                   {"seed", options.seed},
                   {"size", options.full ? "full" : "small"},
                   {"npy", "format 1.0, little-endian, C order; narrow floats as raw unsigned bits"},
                   {"cases", json::array()}};
  ExportSummary summary;
  auto write = [&](const HostTensor& t, const std::string& file) {
    write_file_atomic((fs::path(options.out_dir) / file).string(), npy::encode(t));
    ++summary.files;
  };
  for (const Selection& s : selection) {
    const CaseDecl& decl = *s.decl;
    for (const Point* point : s.points) {
      const std::string id = record_name(decl, *point);
      const std::string stem = file_stem(id);
      progress << "export " << id << "\n";
      const std::vector<HostTensor> inputs = decl.inputs(*point, options.seed);
      const ReferenceResult reference = decl.reference(*point, inputs);
      const ToleranceRule rule = decl.tolerance(*point);
      const std::vector<ToleranceRule> rules = output_rules(decl, *point, reference);

      json entry = {{"id", id},
                    {"operation", decl.full_name()},
                    {"description", decl.description},
                    {"shape", point->shape},
                    {"dims", json::object()},
                    {"dtype", std::string(dtype_name(point->dtype))},
                    {"params", decl.params ? params_json(decl.params(*point)) : json::object()},
                    {"inputs", json::array()},
                    {"outputs", json::array()},
                    {"tolerance", to_json(rule)}};
      entry["tolerance"]["text"] = rule.describe();
      for (const auto& [name, value] : point->dims) entry["dims"][name] = value;
      for (const HostTensor& t : inputs) {
        const std::string file = stem + ".in." + t.name() + ".npy";
        write(t, file);
        entry["inputs"].push_back(tensor_entry(t, file));
      }
      for (size_t i = 0; i < reference.outputs.size(); ++i) {
        // Under the faithful rule the candidate is held against the fp64 truth, with the faithful
        // low-precision output setting the allowance; `file` is what a candidate writes.
        const bool faithful = rules[i].kind == ToleranceRule::Kind::faithful;
        const HostTensor& shown = faithful ? reference.faithful.at(i) : reference.outputs[i];
        const std::string file = stem + ".out." + shown.name() + ".npy";
        write(shown, file);
        json out = tensor_entry(shown, file);
        if (decl.output_tolerance) {
          out["tolerance"] = to_json(rules[i]);
          out["tolerance"]["text"] = rules[i].describe();
        }
        if (faithful) {
          const std::string truth_file = stem + ".truth." + shown.name() + ".npy";
          write(reference.outputs[i], truth_file);
          out["truth_file"] = truth_file;
          out["truth_dtype"] = std::string(dtype_name(reference.outputs[i].dtype()));
        }
        entry["outputs"].push_back(out);
      }
      manifest["cases"].push_back(entry);
      ++summary.cases;
    }
  }
  write_file_atomic((fs::path(options.out_dir) / "manifest.json").string(), manifest.dump(2) + "\n");
  ++summary.files;
  return summary;
}

namespace {

std::optional<DType> dtype_field(const json& entry, const char* key) {
  if (!entry.contains(key) || !entry[key].is_string()) return std::nullopt;
  return parse_dtype(entry[key].get<std::string>());
}

Shape shape_field(const json& entry) {
  Shape shape;
  for (const json& d : entry.at("shape")) shape.push_back(d.get<int64_t>());
  return shape;
}

std::string first_lines(const std::string& text, int lines) {
  std::istringstream in(text);
  std::string line, out;
  for (int i = 0; i < lines && std::getline(in, line); ++i) out += (i ? "\n" : "") + line;
  return out;
}

}  // namespace

int check_vectors(const std::string& dir, const std::string& candidate_dir, std::ostream& out, std::ostream& errors) {
  const fs::path manifest_path = fs::path(dir) / "manifest.json";
  if (!fs::exists(manifest_path)) throw UsageError("'" + dir + "' has no manifest.json (not a gauge vectors directory)");
  if (!fs::is_directory(candidate_dir)) throw UsageError("candidate directory '" + candidate_dir + "' does not exist");
  json manifest;
  try {
    std::ifstream in(manifest_path);
    manifest = json::parse(in);
  } catch (const json::exception& e) {
    throw UsageError("'" + manifest_path.string() + "' is not valid JSON: " + first_lines(e.what(), 1));
  }
  if (!manifest.is_object() || manifest.value("format", "") != "gauge-vectors") {
    throw UsageError("'" + manifest_path.string() + "' is not a gauge vectors manifest");
  }
  const int version = manifest.value("schema_version", -1);
  if (version != kManifestSchemaVersion) {
    throw UsageError("'" + manifest_path.string() + "' has schema_version " + std::to_string(version) +
                     ", this gauge reads " + std::to_string(kManifestSchemaVersion));
  }

  int passed = 0, failed = 0, missing = 0, bad_input = 0;
  for (const json& entry : manifest.at("cases")) {
    const std::string id = entry.value("id", "?");
    try {
      const ToleranceRule case_rule = tolerance_rule_from_json(entry.at("tolerance"));
      std::vector<std::string> absent;
      std::vector<Agreement> agreements;
      for (const json& output : entry.at("outputs")) {
        const std::string name = output.at("name").get<std::string>();
        const std::string file = output.at("file").get<std::string>();
        const std::optional<DType> dtype = dtype_field(output, "dtype");
        if (!dtype) throw UsageError("manifest entry '" + id + "' names an unknown dtype for output '" + name + "'");
        const Shape shape = shape_field(output);
        const fs::path candidate_path = fs::path(candidate_dir) / file;
        if (!fs::exists(candidate_path)) {
          absent.push_back(file);
          continue;
        }
        const HostTensor candidate =
            npy::to_tensor(npy::read_file(candidate_path.string()), name, *dtype, shape, candidate_path.string());
        const std::string reference_file = (fs::path(dir) / file).string();
        const HostTensor reference = npy::to_tensor(npy::read_file(reference_file), name, *dtype, shape, reference_file);
        // An output with its own rule (cases whose outputs differ in depth or magnitude) is judged by it.
        const ToleranceRule rule =
            output.contains("tolerance") ? tolerance_rule_from_json(output.at("tolerance")) : case_rule;
        if (rule.kind == ToleranceRule::Kind::faithful) {
          const std::optional<DType> truth_dtype = dtype_field(output, "truth_dtype");
          if (!truth_dtype) throw UsageError("manifest entry '" + id + "' lacks truth_dtype for the faithful rule");
          const std::string truth_file = (fs::path(dir) / output.at("truth_file").get<std::string>()).string();
          const HostTensor truth = npy::to_tensor(npy::read_file(truth_file), name, *truth_dtype, shape, truth_file);
          agreements.push_back(compare(candidate, truth, rule, &reference));
        } else {
          agreements.push_back(compare(candidate, reference, rule));
        }
      }
      if (!absent.empty()) {
        ++missing;
        out << "MISSING " << id << ": no candidate file";
        for (const std::string& f : absent) out << " " << f;
        out << "\n";
        continue;
      }
      bool ok = true;
      for (const Agreement& a : agreements) ok = ok && a.pass();
      if (ok) {
        ++passed;
        out << "pass    " << id << "\n";
      } else {
        ++failed;
        out << "FAIL    " << id << "\n";
        for (const Agreement& a : agreements) {
          if (!a.pass()) out << a.report();
        }
      }
    } catch (const UsageError& e) {
      ++bad_input;
      errors << "gauge: " << e.what() << "\n";
    } catch (const json::exception& e) {
      ++bad_input;
      errors << "gauge: manifest entry '" << id << "' is malformed: " << first_lines(e.what(), 1) << "\n";
    }
  }
  out << passed << " passed, " << failed << " failed, " << missing << " missing\n";
  if (bad_input > 0) return 2;
  return (failed == 0 && missing == 0) ? 0 : 1;
}

}  // namespace gauge::vectors
