// The gauge command line: info, list, run, compare.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/compare_results.h"
#include "harness/device.h"
#include "harness/error.h"
#include "harness/results.h"
#include "harness/runner.h"
#include "harness/vectors.h"

namespace gauge {
namespace {

constexpr const char* kMainHelp = R"(gauge: conformance and benchmarks for training-efficiency kernels

usage: gauge <command> [options]

commands:
  info      the machine: CPU, GPU, versions, and the peaks MFU is measured against
  list      the declared cases and their shape/dtype points
  run       check every selected case against its reference and benchmark it
  compare   compare two results files; exits 1 on a regression (a CI gate)
  vectors   export the cases as .npy + manifest, or check another implementation's outputs
  report    print a results file as a table (text or Markdown, e.g. for a CI summary)

'gauge <command> --help' describes each command's options.
)";

constexpr const char* kInfoHelp = R"(usage: gauge info [--peak-tflops X] [--peak-gbps Y]

Prints the CPU, the CUDA device (or why there is none), driver/runtime/cuBLAS/NCCL versions, and the
dense peaks used for MFU and %-of-bandwidth. Unknown GPUs get "peak unknown"; --peak-tflops and
--peak-gbps supply the numbers instead.
)";

constexpr const char* kListHelp = R"(usage: gauge list [--suite S] [--filter REGEX] [--quick]

Lists the declared cases as suite/case/shape/dtype, one point per line.
)";

constexpr const char* kRunHelp = R"(usage: gauge run [options]

  --suite S          only suite S
  --filter REGEX     only points whose "suite/case/shape/dtype" matches REGEX
  --device D         cpu | cuda | all (default all): cpu records the reference only, cuda the
                     optimized side only (an error without a CUDA device)
  --out FILE         results file (default results/<host>-<device>-<utc-date>.json); Google
                     Benchmark's own JSON goes beside it as FILE with .gbench.json
  --repetitions N    timed repetitions per implementation (default 5)
  --min-time S       minimum seconds per repetition (default 0.05)
  --quick            only the small points (the ones ctest checks)
  --cold-cache       flush the L2 cache before every timed CUDA call
  --seed N           input seed (default the fixed gauge seed)
  --peak-tflops X    override the dense peak used for MFU
  --peak-gbps Y      override the memory bandwidth peak

Every optimized output is compared with the reference first; one that disagrees is recorded as a
failure with no speed. Exit code: 0 all agree, 1 any disagreement or error, 2 bad usage.
)";

constexpr const char* kCompareHelp = R"(usage: gauge compare BASE NEW [--threshold 5%] [--alpha 0.05]

Matches the records of two results files by suite/case/shape/dtype/impl and flags agreement
regressions (agreed before, disagrees now) and slowdowns beyond noise: a one-sided Mann-Whitney U
test on the repetition times (p < alpha) when both sides have at least 5 repetitions, together with
the threshold on the median; the threshold alone otherwise. With 5 repetitions a side the test can
only reach p = 0.006, so more repetitions make it more sensitive. Exit code: 0 no regression,
1 regression, 2 bad input.
)";

constexpr const char* kVectorsHelp = R"(usage: gauge vectors export [--suite S] [--filter REGEX] [--size small|full] [--seed N] --out DIR
       gauge vectors check DIR --candidate CDIR

export  writes every selected case point's inputs and reference outputs as NumPy .npy files (format
        1.0, little-endian; bf16/fp16/fp8 as raw unsigned bits, the logical dtype in the manifest)
        and DIR/manifest.json: operation, hyper-parameters, files with shapes and dtypes, and the
        tolerance rule with its numbers. The same commit writes byte-identical files.
check   reads, for every case in DIR/manifest.json, the candidate's output files of the same names
        from CDIR, applies the case's tolerance rule, prints one line per case and
        "N passed, N failed, N missing". Exit code: 0 all pass, 1 any failure or missing file,
        2 bad input (no manifest, another schema version, a file of the wrong shape or dtype).
)";

constexpr const char* kReportHelp = R"(usage: gauge report FILE [--markdown]

Prints the records of a results file as the table `gauge run` shows (case, shape, dtype, impl,
agreement, time, rate, % of peak, measured and predicted peak memory), after a line naming the
machine, GPU and commit it came from. --markdown prints a Markdown table instead.
)";

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // --name value
  std::map<std::string, bool> flags;           // --name
};

// Parses argv against the options (taking a value) and flags of one command.
Args parse(int argc, char** argv, int first, const std::vector<std::string>& with_value,
           const std::vector<std::string>& flags, const std::string& command) {
  Args args;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      args.positional.push_back(a);
      continue;
    }
    std::string value;
    bool has_inline_value = false;
    if (const size_t eq = a.find('='); eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline_value = true;
    }
    if (std::find(flags.begin(), flags.end(), a) != flags.end() && !has_inline_value) {
      args.flags[a] = true;
    } else if (std::find(with_value.begin(), with_value.end(), a) != with_value.end()) {
      if (!has_inline_value) {
        if (i + 1 >= argc) throw UsageError("option " + a + " needs a value");
        value = argv[++i];
      }
      args.options[a] = value;
    } else {
      throw UsageError("unknown option '" + a + "' for 'gauge " + command + "' (see gauge " + command + " --help)");
    }
  }
  return args;
}

double parse_number(const std::string& option, const std::string& text) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used != text.size() || !std::isfinite(v)) throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    throw UsageError(option + " expects a number, got '" + text + "'");
  }
}

int64_t parse_integer(const std::string& option, const std::string& text, int64_t min_value) {
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used, 0);
    if (used != text.size() || v < min_value) throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    throw UsageError(option + " expects an integer >= " + std::to_string(min_value) + ", got '" + text + "'");
  }
}

PeakOverrides peak_overrides(const Args& args) {
  PeakOverrides o;
  if (args.options.count("--peak-tflops")) {
    o.tflops = parse_number("--peak-tflops", args.options.at("--peak-tflops"));
    if (*o.tflops <= 0) throw UsageError("--peak-tflops must be positive");
  }
  if (args.options.count("--peak-gbps")) {
    o.gbps = parse_number("--peak-gbps", args.options.at("--peak-gbps"));
    if (*o.gbps <= 0) throw UsageError("--peak-gbps must be positive");
  }
  return o;
}

std::string option_or(const Args& args, const std::string& name, const std::string& fallback) {
  const auto it = args.options.find(name);
  return it == args.options.end() ? fallback : it->second;
}

void no_positional(const Args& args, const std::string& command) {
  if (!args.positional.empty()) {
    throw UsageError("unexpected argument '" + args.positional.front() + "' for 'gauge " + command + "'");
  }
}

int command_info(int argc, char** argv) {
  const Args args = parse(argc, argv, 2, {"--peak-tflops", "--peak-gbps"}, {}, "info");
  no_positional(args, "info");
  const MachineInfo m = probe_machine(peak_overrides(args));
  std::cout << "gauge " << m.gauge_version << " (commit " << m.git_commit << ", " << m.build_type << ", "
            << (m.built_with_cuda ? "with CUDA" : "without CUDA") << ")\n";
  std::cout << "host:     " << m.host << "\n";
  std::cout << "cpu:      " << m.cpu.model << ", " << m.cpu.logical_cores << " logical cores\n";
  if (!m.gpu) {
    std::cout << "gpu:      none (" << m.gpu_unavailable_reason << ")\n";
  } else {
    const gpu::DeviceInfo& g = *m.gpu;
    std::cout << "gpu:      " << g.name << ", compute capability " << g.cc_major << "." << g.cc_minor << ", "
              << g.sm_count << " SMs, " << format_bytes(static_cast<double>(g.memory_bytes)) << ", L2 "
              << format_bytes(static_cast<double>(g.l2_bytes)) << ", measured SM clock " << g.measured_sm_clock_mhz
              << " MHz\n";
    std::cout << "versions: driver " << g.driver_version << ", runtime " << g.runtime_version << ", cuBLAS "
              << g.cublas_version << ", NCCL " << g.nccl_version << "\n";
  }
  if (m.gpu_peaks) {
    std::cout << "peaks:    " << m.gpu_peaks->table_entry << " (" << m.gpu_peaks->source << "): HBM "
              << m.gpu_peaks->hbm_gbps << " GB/s";
    for (const auto& [dtype, tflops] : m.gpu_peaks->tflops) std::cout << ", " << dtype_name(dtype) << " " << tflops;
    std::cout << " TFLOP/s\n";
  } else {
    std::cout << "peaks:    peak unknown" << (m.gpu ? " (not in the table: pass --peak-tflops / --peak-gbps)" : "")
              << "\n";
  }
  std::cout << "table:    ";
  const std::vector<std::string> rows = gpu_peak_table_rows();
  for (size_t i = 0; i < rows.size(); ++i) std::cout << (i ? ", " : "") << rows[i];
  std::cout << "\n";
  return 0;
}

int command_list(int argc, char** argv) {
  const Args args = parse(argc, argv, 2, {"--suite", "--filter"}, {"--quick"}, "list");
  no_positional(args, "list");
  for (const Selection& s : select_cases(option_or(args, "--suite", ""), option_or(args, "--filter", ""),
                                         args.flags.count("--quick") > 0)) {
    for (const Point* p : s.points) {
      std::cout << record_name(*s.decl, *p) << (p->quick ? "" : "  (full)") << "\n";
    }
  }
  return 0;
}

int command_run(int argc, char** argv) {
  const Args args = parse(argc, argv, 2,
                          {"--suite", "--filter", "--device", "--out", "--repetitions", "--min-time", "--seed",
                           "--peak-tflops", "--peak-gbps"},
                          {"--quick", "--cold-cache"}, "run");
  no_positional(args, "run");
  RunOptions options;
  options.suite = option_or(args, "--suite", "");
  options.filter = option_or(args, "--filter", "");
  const std::string device = option_or(args, "--device", "all");
  const auto selection_of_devices = parse_device_selection(device);
  if (!selection_of_devices) throw UsageError("--device must be cpu, cuda or all, got '" + device + "'");
  options.devices = *selection_of_devices;
  if (args.options.count("--repetitions")) {
    options.repetitions = static_cast<int>(parse_integer("--repetitions", args.options.at("--repetitions"), 1));
  }
  if (args.options.count("--min-time")) {
    options.min_seconds_per_repetition = parse_number("--min-time", args.options.at("--min-time"));
    if (options.min_seconds_per_repetition <= 0) throw UsageError("--min-time must be positive");
  }
  if (args.options.count("--seed")) {
    options.seed = static_cast<uint64_t>(parse_integer("--seed", args.options.at("--seed"), 0));
  }
  options.quick = args.flags.count("--quick") > 0;
  options.cold_cache = args.flags.count("--cold-cache") > 0;

  // Every check of the user's input happens before any work, so bad input leaves no file behind.
  const std::vector<Selection> selection = select_cases(options.suite, options.filter, options.quick);
  const MachineInfo machine = probe_machine(peak_overrides(args));
  if (options.devices == DeviceSelection::cuda && !machine.gpu) {
    throw UsageError("--device cuda: " + machine.gpu_unavailable_reason);
  }
  const std::string out = option_or(args, "--out", "results/" + machine.host + "-" + device_slug(machine) + "-" +
                                                        utc_date() + ".json");
  std::string gbench_out = out;
  if (gbench_out.size() > 5 && gbench_out.substr(gbench_out.size() - 5) == ".json") {
    gbench_out.resize(gbench_out.size() - 5);
  }
  gbench_out += ".gbench.json";
  check_writable(out);
  check_writable(gbench_out);

  std::cerr << "gauge run: " << (machine.gpu ? machine.gpu->name : "no CUDA device (" + machine.gpu_unavailable_reason + ")")
            << "; results to " << out << "\n";
  Runner runner(machine, options);
  ResultsFile results;
  results.created_utc = utc_now_iso8601();
  results.machine = machine_to_json(machine);
  results.records = runner.run(selection, std::cerr);

  std::cout << "\n";
  print_table(results.records, std::cout);
  write_file_atomic(out, to_json(results).dump(2) + "\n");
  write_file_atomic(gbench_out, google_benchmark_json());
  int failures = 0;
  for (const Record& r : results.records) {
    if (r.status == RecordStatus::disagree || r.status == RecordStatus::error) ++failures;
  }
  std::cout << "\nwrote " << out << " (" << results.records.size() << " records) and " << gbench_out << "\n";
  if (failures > 0) {
    std::cerr << "gauge run: " << failures << " record(s) disagree or failed\n";
    return 1;
  }
  return 0;
}

int command_compare(int argc, char** argv) {
  const Args args = parse(argc, argv, 2, {"--threshold", "--alpha"}, {}, "compare");
  if (args.positional.size() != 2) throw UsageError("gauge compare needs two results files: BASE NEW");
  CompareOptions2 options;
  if (args.options.count("--threshold")) {
    std::string text = args.options.at("--threshold");
    const bool percent = !text.empty() && text.back() == '%';
    if (percent) text.pop_back();
    options.threshold = parse_number("--threshold", text) / (percent ? 100.0 : 1.0);
    if (options.threshold < 0) throw UsageError("--threshold must not be negative");
  }
  if (args.options.count("--alpha")) {
    options.alpha = parse_number("--alpha", args.options.at("--alpha"));
    if (options.alpha <= 0 || options.alpha >= 1) throw UsageError("--alpha must be in (0, 1)");
  }
  const ResultsFile base = read_results(args.positional[0]);
  const ResultsFile next = read_results(args.positional[1]);
  const ComparisonReport report = compare_results(base, next, options);
  print_comparison(report, std::cout);
  return report.regressions > 0 ? 1 : 0;
}

int command_vectors(int argc, char** argv) {
  if (argc < 3) throw UsageError("gauge vectors needs 'export' or 'check' (see gauge vectors --help)");
  const std::string action = argv[2];
  if (action == "export") {
    const Args args = parse(argc, argv, 3, {"--suite", "--filter", "--size", "--seed", "--out"}, {}, "vectors export");
    no_positional(args, "vectors export");
    vectors::ExportOptions options;
    options.suite = option_or(args, "--suite", "");
    options.filter = option_or(args, "--filter", "");
    const std::string size = option_or(args, "--size", "small");
    if (size != "small" && size != "full") throw UsageError("--size must be small or full, got '" + size + "'");
    options.full = size == "full";
    options.seed = args.options.count("--seed") ? static_cast<uint64_t>(parse_integer("--seed", args.options.at("--seed"), 0))
                                                : inputs::kDefaultSeed;
    options.out_dir = option_or(args, "--out", "");
    const vectors::ExportSummary summary = vectors::export_vectors(options, std::cerr);
    std::cout << "wrote " << summary.cases << " cases (" << summary.files << " files) to " << options.out_dir << "\n";
    return 0;
  }
  if (action == "check") {
    const Args args = parse(argc, argv, 3, {"--candidate"}, {}, "vectors check");
    if (args.positional.size() != 1) throw UsageError("gauge vectors check needs one vectors directory: DIR --candidate CDIR");
    if (!args.options.count("--candidate")) throw UsageError("gauge vectors check needs --candidate CDIR");
    return vectors::check_vectors(args.positional[0], args.options.at("--candidate"), std::cout, std::cerr);
  }
  throw UsageError("unknown vectors action '" + action + "' (export or check)");
}

int command_report(int argc, char** argv) {
  const Args args = parse(argc, argv, 2, {}, {"--markdown"}, "report");
  if (args.positional.size() != 1) throw UsageError("gauge report needs one results file");
  const ResultsFile results = read_results(args.positional[0]);
  const auto& m = results.machine;
  const auto text = [&](const char* key) { return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : "?"; };
  std::string gpu = "no GPU";
  if (m.contains("gpu") && m["gpu"].is_object() && m["gpu"].contains("name")) gpu = m["gpu"]["name"].get<std::string>();
  std::cout << args.positional[0] << ": " << text("host") << ", " << gpu << ", gauge " << text("gauge_version")
            << " at " << text("git_commit") << ", " << results.created_utc << "\n\n";
  print_table(results.records, std::cout, args.flags.count("--markdown") ? TableStyle::markdown : TableStyle::text);
  return 0;
}

bool wants_help(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

int dispatch(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kMainHelp;
    return 2;
  }
  const std::string command = argv[1];
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << kMainHelp;
    return 0;
  }
  const std::map<std::string, std::pair<const char*, int (*)(int, char**)>> commands = {
      {"info", {kInfoHelp, command_info}},
      {"list", {kListHelp, command_list}},
      {"run", {kRunHelp, command_run}},
      {"compare", {kCompareHelp, command_compare}},
      {"vectors", {kVectorsHelp, command_vectors}},
      {"report", {kReportHelp, command_report}},
  };
  const auto it = commands.find(command);
  if (it == commands.end()) throw UsageError("unknown command '" + command + "' (see gauge --help)");
  if (wants_help(argc, argv)) {
    std::cout << it->second.first;
    return 0;
  }
  return it->second.second(argc, argv);
}

}  // namespace
}  // namespace gauge

int main(int argc, char** argv) {
  try {
    return gauge::dispatch(argc, argv);
  } catch (const gauge::UsageError& e) {
    std::cerr << "gauge: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "gauge: error: " << e.what() << "\n";
    return 3;
  }
}
