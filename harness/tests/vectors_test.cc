#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness/case.h"
#include "harness/error.h"
#include "harness/inputs.h"
#include "harness/npy.h"
#include "harness/vectors.h"

namespace gauge {
namespace {

namespace fs = std::filesystem;

// Two outputs judged by different rules: "twice" bit-exact, "rough" within 1e-3 absolute (a stand-in
// for outputs of one call that differ in accumulation depth or magnitude).
GAUGE_REGISTER_CASE({
    .suite = "harness_selftest_rules",
    .name = "two_outputs",
    .description = "twice = 2 x, rough = x + 1",
    .points = grid({{{{"n", 64}}, true}}, {DType::f32}),
    .model = [](const Point& p) {
      CostModel m;
      m.bytes = 12.0 * static_cast<double>(p.dim("n"));
      return m;
    },
    .tolerance = [](const Point&) { return tolerance::exact_bits(); },
    .inputs =
        [](const Point& p, uint64_t seed) {
          return std::vector<HostTensor>{inputs::uniform_f32("x", {p.dim("n")}, seed, 0, -1, 1)};
        },
    .reference =
        [](const Point&, const std::vector<HostTensor>& in) {
          HostTensor twice("twice", DType::f32, in[0].shape()), rough("rough", DType::f32, in[0].shape());
          for (size_t i = 0; i < twice.view<float>().size(); ++i) {
            twice.view<float>()[i] = 2 * in[0].view<float>()[i];
            rough.view<float>()[i] = in[0].view<float>()[i] + 1;
          }
          ReferenceResult r;
          r.outputs.push_back(std::move(twice));
          r.outputs.push_back(std::move(rough));
          return r;
        },
    .output_tolerance =
        [](const Point&, const std::string& output) {
          if (output == "rough") {
            ToleranceRule rule;
            rule.kind = ToleranceRule::Kind::abs_rel;
            rule.atol = 1e-3;
            rule.derivation = "test rule";
            return rule;
          }
          return tolerance::exact_bits();
        },
});

// Uses the harness_selftest/double_it case declared in case_test.cc.
class Vectors : public testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("gauge-vectors-test-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    vectors_ = root_ / "vectors";
    candidate_ = root_ / "candidate";
    fs::create_directories(candidate_);
  }
  void TearDown() override { fs::remove_all(root_); }

  vectors::ExportSummary export_selftest(const fs::path& dir, const std::string& suite = "harness_selftest") {
    vectors::ExportOptions options;
    options.suite = suite;
    options.out_dir = dir.string();
    options.seed = 7;
    std::ostringstream progress;
    return vectors::export_vectors(options, progress);
  }
  int check(std::string& out, std::string& errors) {
    std::ostringstream o, e;
    const int code = vectors::check_vectors(vectors_.string(), candidate_.string(), o, e);
    out = o.str();
    errors = e.str();
    return code;
  }
  std::vector<fs::path> output_files() {
    std::vector<fs::path> files;
    for (const auto& f : fs::directory_iterator(vectors_)) {
      if (f.path().string().find(".out.") != std::string::npos) files.push_back(f.path());
    }
    return files;
  }

  fs::path root_, vectors_, candidate_;
};

TEST_F(Vectors, ExportIsDeterministic) {
  const vectors::ExportSummary first = export_selftest(vectors_);
  EXPECT_EQ(first.cases, 1);  // the small size: the quick point only
  EXPECT_EQ(first.files, 3);  // input, output, manifest
  export_selftest(root_ / "again");
  for (const auto& f : fs::directory_iterator(vectors_)) {
    std::ifstream a(f.path(), std::ios::binary), b(root_ / "again" / f.path().filename(), std::ios::binary);
    std::stringstream sa, sb;
    sa << a.rdbuf();
    sb << b.rdbuf();
    EXPECT_EQ(sa.str(), sb.str()) << f.path().filename() << " differs between two exports";
  }
}

TEST_F(Vectors, ReferenceOutputsAsCandidatePassAndAPerturbationFailsNamingTheElement) {
  export_selftest(vectors_);
  for (const fs::path& f : output_files()) fs::copy_file(f, candidate_ / f.filename());
  std::string out, errors;
  EXPECT_EQ(check(out, errors), 0) << out << errors;
  EXPECT_NE(out.find("1 passed, 0 failed, 0 missing"), std::string::npos) << out;

  // Perturb element 42 by far more than the (bit-exact) rule allows.
  const fs::path file = candidate_ / output_files().front().filename();
  npy::Array a = npy::read_file(file.string());
  HostTensor t = npy::to_tensor(a, "y", DType::f32, a.shape, "candidate");
  t.view<float>()[42] += 1.0f;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << npy::encode(t);
  EXPECT_EQ(check(out, errors), 1) << out << errors;
  EXPECT_NE(out.find("FAIL"), std::string::npos) << out;
  EXPECT_NE(out.find("[42]"), std::string::npos) << "the failing element's coordinates: " << out;
  EXPECT_NE(out.find("0 passed, 1 failed"), std::string::npos) << out;
}

TEST_F(Vectors, EachOutputIsJudgedByItsOwnRule) {
  export_selftest(vectors_, "harness_selftest_rules");
  for (const fs::path& f : output_files()) fs::copy_file(f, candidate_ / f.filename());
  const auto nudge = [&](const std::string& output, float by) {
    for (const fs::path& f : output_files()) {
      if (f.filename().string().find(".out." + output + ".") == std::string::npos) continue;
      const fs::path file = candidate_ / f.filename();
      npy::Array a = npy::read_file(file.string());
      HostTensor t = npy::to_tensor(a, output, DType::f32, a.shape, "candidate");
      t.view<float>()[5] += by;
      std::ofstream(file, std::ios::binary | std::ios::trunc) << npy::encode(t);
    }
  };
  std::string out, errors;
  nudge("rough", 5e-4f);  // inside rough's own 1e-3, far outside the case's bit-exact rule
  EXPECT_EQ(check(out, errors), 0) << out << errors;
  nudge("rough", 1e-3f);  // now 1.5e-3 off
  EXPECT_EQ(check(out, errors), 1) << out << errors;
  EXPECT_NE(out.find("[5]"), std::string::npos) << out;
  nudge("rough", -1.5e-3f);
  EXPECT_EQ(check(out, errors), 0) << out << errors;
  nudge("twice", 1e-6f);  // bit-exact output: any change fails
  EXPECT_EQ(check(out, errors), 1) << out << errors;
}

TEST(OutputRules, FallBackToThePointRuleAndNeedFaithfulOutputs) {
  const CaseDecl* per_output = find_case("harness_selftest_rules/two_outputs");
  ASSERT_NE(per_output, nullptr);
  const Point& point = per_output->points.front();
  const ReferenceResult r = per_output->reference(point, per_output->inputs(point, 1));
  const std::vector<ToleranceRule> rules = output_rules(*per_output, point, r);
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0].kind, ToleranceRule::Kind::ulp);
  EXPECT_EQ(rules[1].kind, ToleranceRule::Kind::abs_rel);

  CaseDecl faithful_without_outputs = *per_output;
  faithful_without_outputs.output_tolerance = [](const Point&, const std::string&) {
    return tolerance::faithful(2.0, 0.0, "test");
  };
  EXPECT_THROW(output_rules(faithful_without_outputs, point, r), std::logic_error);
}

TEST_F(Vectors, MissingCandidateFilesAreReportedAsMissing) {
  export_selftest(vectors_);
  std::string out, errors;
  EXPECT_EQ(check(out, errors), 1);
  EXPECT_NE(out.find("MISSING"), std::string::npos) << out;
  EXPECT_NE(out.find("0 passed, 0 failed, 1 missing"), std::string::npos) << out;
}

TEST_F(Vectors, BadInputIsOneLineAndExitCodeTwo) {
  std::string out, errors;
  // No manifest.
  fs::create_directories(vectors_);
  EXPECT_THROW(check(out, errors), UsageError);
  // Another schema version.
  export_selftest(vectors_);
  {
    std::ifstream in(vectors_ / "manifest.json");
    std::stringstream text;
    text << in.rdbuf();
    std::string changed = text.str();
    const size_t at = changed.find("\"schema_version\": 1");
    ASSERT_NE(at, std::string::npos);
    changed.replace(at, 19, "\"schema_version\": 9");
    std::ofstream(root_ / "manifest9.json") << changed;
  }
  fs::copy_file(vectors_ / "manifest.json", root_ / "manifest1.json");
  fs::copy_file(root_ / "manifest9.json", vectors_ / "manifest.json", fs::copy_options::overwrite_existing);
  try {
    check(out, errors);
    ADD_FAILURE() << "schema version 9 was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("schema_version 9"), std::string::npos) << e.what();
  }
  fs::copy_file(root_ / "manifest1.json", vectors_ / "manifest.json", fs::copy_options::overwrite_existing);
  // A candidate of the wrong shape.
  const fs::path name = output_files().front().filename();
  std::ofstream(candidate_ / name, std::ios::binary) << npy::encode(HostTensor("y", DType::f32, {3}));
  EXPECT_EQ(check(out, errors), 2);
  EXPECT_NE(errors.find("shape"), std::string::npos) << errors;
  EXPECT_EQ(std::count(errors.begin(), errors.end(), '\n'), 1) << errors;
  // ... and of the wrong dtype.
  std::ofstream(candidate_ / name, std::ios::binary | std::ios::trunc) << npy::encode(HostTensor("y", DType::f64, {100}));
  EXPECT_EQ(check(out, errors), 2);
  EXPECT_NE(errors.find("<f8"), std::string::npos) << errors;
}

}  // namespace
}  // namespace gauge
