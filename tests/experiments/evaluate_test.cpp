#include <doctest/doctest.h>

#include <Eigen/Core>
#include <cmath>
#include <filesystem>
#include <string>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/config.hpp"
#include "eisim/io/data.hpp"
#include "eisim/io/hdf5.hpp"
#include "eisim/models/error.hpp"
#include "test_support.hpp"

using namespace eisim;
namespace fs = std::filesystem;

namespace {

io::Config tiny(const std::vector<std::string>& extra = {}) {
  return io::load_config(test::source_path("tests/data/tiny.yaml"), extra);
}

experiments::TrainOptions quiet(const std::string& out, bool resume = false) {
  experiments::TrainOptions o;
  o.out = out;
  o.resume = resume;
  o.quiet = true;
  o.command = "test";
  return o;
}

experiments::EvaluateOptions eval_of(const std::string& run, const std::string& out = "") {
  experiments::EvaluateOptions o;
  o.run = run;
  o.out = out;
  o.command = "test evaluate";
  return o;
}

/// Row e of a (E, K) dataset.
std::vector<double> row_of(const io::H5File& f, const std::string& d, Eigen::Index e) {
  const Mat<double> m = f.read_matrix(d);
  std::vector<double> r(std::size_t(m.cols()));
  for (Eigen::Index k = 0; k < m.cols(); ++k) r[std::size_t(k)] = m(e, k);
  return r;
}

}  // namespace

TEST_CASE("a validation split is the last N training images, never trained on, and recorded") {
  const auto dir = test::scratch_dir("validation_split");
  const std::string with = (dir / "with.h5").string(), without = (dir / "without.h5").string();
  // The same first 512 training images, with and without 1000 held-out images at the end.
  const auto s =
      experiments::run_train(tiny({"train.epochs=2", "data.validation=1000"}), quiet(with));
  experiments::run_train(tiny({"train.epochs=2"}), quiet(without));
  {
    const auto fw = io::H5File::open_read(with), fo = io::H5File::open_read(without);
    // Training saw the same images in the same order: identical weights and training losses.
    CHECK(fw.read_matrix("weights/layer_0/W_EX") == fo.read_matrix("weights/layer_0/W_EX"));
    CHECK(fw.read_vector("train/loss") == fo.read_vector("train/loss"));
    // The test accuracies do not depend on the split; the validation ones are recorded per epoch
    // and eval eps, and only when there is a split.
    CHECK(fw.read_matrix("train/test_accuracy") == fo.read_matrix("train/test_accuracy"));
    const Mat<double> va = fw.read_matrix("train/validation_accuracy");
    const Mat<double> vl = fw.read_matrix("train/validation_loss");
    CHECK(va.rows() == 2);
    CHECK(va.cols() == 2);
    CHECK(vl.rows() == 2);
    CHECK(fw.read_matrix("train/validation_forward_failures").rows() == 2);
    CHECK(va.minCoeff() > 0.3);  // far above chance (10 %) after two tiny epochs
    CHECK(va.maxCoeff() <= 1.0);
    CHECK(vl.minCoeff() > 0.0);
    CHECK(s.validation_accuracy == row_of(fw, "train/validation_accuracy", 1));
    CHECK_FALSE(fo.exists("train/validation_accuracy"));
    CHECK(fw.attr_int("/", "validation_images") == 1000);
    CHECK(fw.attr_int("/", "validation_first") == 59000);
    CHECK(fw.attr_string("/", "probe_set") == "validation");
    CHECK(fo.attr_string("/", "probe_set") == "test");
    // The diagnostics come from the validation images, so they differ from the test probe's.
    CHECK(fw.read_matrix("train/activity_mean") != fo.read_matrix("train/activity_mean"));
  }  // the files are closed before the resume rewrites one of them
  // And a resume continues the validation record.
  experiments::run_train(tiny({"train.epochs=3", "data.validation=1000"}), quiet(with, true));
  CHECK(io::H5File::open_read(with).read_matrix("train/validation_accuracy").rows() == 3);
}

TEST_CASE("load_training_data holds out exactly the last images, disjoint from the training set") {
  const std::string d = io::DataSpec{}.dir;
  const io::Dataset all = io::load_fashion_mnist(d, true);
  const io::TrainingData t = io::load_training_data(d, 0, 2500);
  CHECK(t.validation_first == 57500);
  CHECK(t.train.size() == 57500);
  CHECK(t.validation.size() == 2500);
  CHECK(t.train.images == all.images.leftCols(57500));
  CHECK(t.validation.images == all.images.rightCols(2500));
  CHECK(std::equal(t.validation.labels.begin(), t.validation.labels.end(),
                   all.labels.begin() + 57500));
  // train_limit takes the first images of those left, the validation set does not move.
  const io::TrainingData l = io::load_training_data(d, 300, 2500);
  CHECK(l.train.images == all.images.leftCols(300));
  CHECK(l.validation.images == t.validation.images);
  CHECK_THROWS_WITH_AS(io::load_training_data(d, 58000, 2500), doctest::Contains("train_limit"),
                       eisim::config_error);
  // The configuration refuses the same, naming both keys.
  CHECK_THROWS_WITH_AS(tiny({"data.validation=59900", "data.train_limit=200"}),
                       doctest::Contains("data.validation = 59900"), eisim::config_error);
  CHECK_THROWS_WITH_AS(tiny({"data.validation=60000"}), doctest::Contains("data.validation"),
                       eisim::config_error);
  CHECK_THROWS_WITH_AS(tiny({"data.validaton=10"}), doctest::Contains("data.validation"),
                       eisim::config_error);
}

TEST_CASE("evaluate reproduces the run file's final test and validation accuracies exactly") {
  for (const char* kind : {"circuit", "layernorm"}) {
    CAPTURE(kind);
    const auto dir = test::scratch_dir(std::string("evaluate_") + kind);
    const std::string run = (dir / "run.h5").string(), out = (dir / "eval.h5").string();
    experiments::run_train(
        tiny({"train.epochs=2", "data.validation=600", std::string("network.kind=") + kind}),
        quiet(run));
    const auto s = experiments::run_evaluate(eval_of(run, out));
    const auto f = io::H5File::open_read(run);
    const auto test_acc = row_of(f, "train/test_accuracy", 1);
    const auto val_acc = row_of(f, "train/validation_accuracy", 1);
    const auto val_loss = row_of(f, "train/validation_loss", 1);
    const auto eps = f.read_vector("train/eval_eps");
    REQUIRE(s.rows.size() == 2 * eps.size());
    CHECK(s.epoch == 2);
    CHECK(s.status == "complete");
    for (std::size_t k = 0; k < eps.size(); ++k) {
      CAPTURE(k);
      CHECK(s.rows[k].set == "test");
      CHECK(s.rows[k].eps == eps[k]);
      CHECK(s.rows[k].result.accuracy == test_acc[k]);
      CHECK(s.rows[k].result.images == 256);
      const auto& v = s.rows[eps.size() + k];
      CHECK(v.set == "validation");
      CHECK(v.result.accuracy == val_acc[k]);
      CHECK(v.result.loss == val_loss[k]);
      CHECK(v.result.images == 600);
    }
    // The file holds the same numbers and says where they come from.
    const auto e = io::H5File::open_read(out);
    CHECK(e.read_vector("evaluate/test/accuracy") == test_acc);
    CHECK(e.read_vector("evaluate/validation/accuracy") == val_acc);
    for (const char* d :
         {"forward_failures", "forward_fallbacks", "forward_iterations_mean", "stability_checked",
          "forward_unstable", "forward_oscillatory", "forward_marginal", "forward_reintegrated",
          "images", "loss", "forward_continuations", "forward_factorisations",
          "forward_krylov_vectors"})
      CHECK_MESSAGE(e.exists(std::string("evaluate/test/") + d), d);
    // The default circuit's pooled Newton solves factorise (most layer solves take a step) and
    // run no GMRES (pooled circuits never do); layernorm solves nothing.
    const auto lus = e.read_vector("evaluate/test/forward_factorisations");
    const auto gm = e.read_vector("evaluate/test/forward_krylov_vectors");
    REQUIRE(lus.size() == eps.size());
    for (std::size_t k = 0; k < lus.size(); ++k) {
      CHECK(gm[k] == 0);
      if (std::string(kind) == "circuit")
        CHECK(lus[k] > 0);
      else
        CHECK(lus[k] == 0);
    }
    CHECK(e.attr_string("/", "file_kind") == "evaluation");
    CHECK(e.attr_string("/", "source_run") == run);
    CHECK(e.attr_int("/", "source_epoch") == 2);
    // Only circuits record a learning rule.
    CHECK(f.exists("train/forward_unstable"));
    bool has_rule = true;
    try {
      (void)f.attr_string("/", "rule");
    } catch (const eisim::error&) {
      has_rule = false;
    }
    CHECK(has_rule == (std::string(kind) == "circuit"));
  }
}

TEST_CASE("evaluate's transformations: neutral values equal the clean images, each in its group") {
  const auto dir = test::scratch_dir("evaluate_transforms");
  const std::string run = (dir / "run.h5").string(), out = (dir / "eval.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(run));
  // A --transforms file, then --set on top of it (the later wins for the same key).
  const std::string yaml = (dir / "transforms.yaml").string();
  test::write_text(yaml,
                   "data:\n  eval_eps: [0.0, 0.5]\nevaluate:\n  shift: [0.0, -0.5, 0.5]\n"
                   "  contrast: [1.0, 0.5]\n  noise: [0.3]\n");
  auto o = eval_of(run, out);
  o.transforms = yaml;
  o.overrides = {"evaluate.noise=[0.0, 0.3]"};
  const auto s = experiments::run_evaluate(o);
  REQUIRE(s.rows.size() == 2 + 3 + 2 + 2);
  const auto& clean = s.rows[0];
  REQUIRE(clean.transform == "jitter");
  REQUIRE(clean.eps == 0.0);
  int neutral = 0;
  for (const auto& r : s.rows) {
    CAPTURE(r.transform);
    CAPTURE(r.value);
    CHECK(r.set == "test");
    CHECK(r.result.images == clean.result.images);
    REQUIRE(r.result.silent_inhibition.size() == 2);  // tiny.yaml: two hidden circuit layers
    for (double f : r.result.silent_inhibition) CHECK((f >= 0 && f <= 1));
    const bool is_neutral = (r.transform == "shift" && r.value == 0.0) ||
                            (r.transform == "contrast" && r.value == 1.0) ||
                            (r.transform == "noise" && r.value == 0.0);
    if (!is_neutral) continue;
    ++neutral;  // the same images: the same numbers, to the bit
    CHECK(r.result.accuracy == clean.result.accuracy);
    CHECK(r.result.loss == clean.result.loss);
  }
  CHECK(neutral == 3);
  // A transform that changes the images changes the loss (all the same images otherwise).
  for (const auto& r : s.rows)
    if (r.transform == "shift" && r.value == -0.5) CHECK(r.result.loss != clean.result.loss);
  const auto f = io::H5File::open_read(out);
  CHECK(f.read_vector("evaluate/test/eval_eps") == std::vector<double>{0.0, 0.5});
  CHECK(f.read_vector("evaluate/test/shift/value") == std::vector<double>{0.0, -0.5, 0.5});
  CHECK(f.read_vector("evaluate/test/contrast/value") == std::vector<double>{1.0, 0.5});
  CHECK(f.read_vector("evaluate/test/noise/value") == std::vector<double>{0.0, 0.3});
  CHECK(f.read_matrix("evaluate/test/shift/silent_inhibition").rows() == 3);
  CHECK(f.read_vector("evaluate/test/noise/accuracy").size() == 2);
  // A mistyped key in the file names the valid one; a key that would change the network is
  // refused like --set; a file that is not a mapping is refused.
  o.out.clear();
  test::write_text(yaml, "evaluate:\n  shfit: [0.5]\n");
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(o), doctest::Contains("evaluate.shift"),
                       eisim::config_error);
  test::write_text(yaml, "network:\n  width: 7\n");
  o.overrides.clear();
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(o), doctest::Contains("network.width"),
                       eisim::config_error);
  test::write_text(yaml, "- 1\n- 2\n");
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(o), doctest::Contains("mapping"),
                       eisim::config_error);
  test::write_text(yaml, "evaluate:\n  contrast: [-1]\n");
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(o), doctest::Contains("evaluate.contrast"),
                       eisim::config_error);
}

TEST_CASE("evaluate refuses to overwrite, to write into the run, and a wrong or corrupt file") {
  const auto dir = test::scratch_dir("evaluate_refusals");
  const std::string run = (dir / "run.h5").string(), out = (dir / "eval.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(run));
  experiments::run_evaluate(eval_of(run, out));
  const auto before = fs::last_write_time(out);
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(eval_of(run, out)),
                       doctest::Contains("already exists"), eisim::error);
  CHECK(fs::last_write_time(out) == before);
  auto again = eval_of(run, out);
  again.overwrite = true;  // an earlier evaluation is replaced when asked
  experiments::run_evaluate(again);
  auto into_run = eval_of(run, run);
  into_run.overwrite = true;
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(into_run), doctest::Contains("is the run file"),
                       eisim::config_error);
  // --overwrite never replaces a file that is not an evaluation (here another run).
  const std::string other = (dir / "other.h5").string();
  fs::copy_file(run, other);
  auto onto_run = eval_of(run, other);
  onto_run.overwrite = true;
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(onto_run), doctest::Contains("not an evaluation"),
                       eisim::config_error);
  // No validation split to evaluate; a --set that changes the network.
  auto val = eval_of(run);
  val.split = "validation";
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(val), doctest::Contains("without a validation"),
                       eisim::config_error);
  auto width = eval_of(run);
  width.overrides = {"network.width=10"};
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(width), doctest::Contains("network.width"),
                       eisim::config_error);
  auto eps = eval_of(run);
  eps.overrides = {"data.eval_eps=[0.9]"};
  const auto s = experiments::run_evaluate(eps);
  REQUIRE(s.rows.size() == 1);
  CHECK(s.rows[0].eps == 0.9);
  // A file that is not a run of eisim train, and a run whose weights were altered.
  CHECK_THROWS_AS(experiments::run_evaluate(eval_of(out)), eisim::data_error);
  const std::string bad = (dir / "bad.h5").string();
  fs::copy_file(run, bad);
  io::update_atomically(bad, [](io::H5File& f) {
    Mat<double> m = f.read_matrix("weights/layer_0/W_EX");
    m(0, 0) += 1;
    f.write("weights/layer_0/W_EX", Mat<float>(m.cast<float>()));
  });
  CHECK_THROWS_WITH_AS(experiments::run_evaluate(eval_of(bad)), doctest::Contains("checksum"),
                       eisim::data_error);
}

TEST_CASE("every output file records the CPU, the instruction set, the compiler and Eigen") {
  const auto dir = test::scratch_dir("provenance");
  const std::string run = (dir / "run.h5").string(), out = (dir / "eval.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(run));
  experiments::run_evaluate(eval_of(run, out));
  for (const std::string& path : {run, out}) {
    CAPTURE(path);
    const auto f = io::H5File::open_read(path);
    CHECK(f.attr_string("/", "cpu_model").size() > 0);
    CHECK(f.attr_string("/", "compiler").size() > 4);
    CHECK(f.attr_string("/", "eigen_version") == std::to_string(EIGEN_WORLD_VERSION) + "." +
                                                     std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                                     std::to_string(EIGEN_MINOR_VERSION));
    const std::string isa = f.attr_string("/", "isa");
    // The tests are compiled with the library's flags: the same macros hold here.
#ifdef __AVX2__
    CHECK(isa.find("avx2") != std::string::npos);
#else
    CHECK(isa.find("avx2") == std::string::npos);
#endif
#ifdef __AVX512F__
    CHECK(isa.find("avx512f") != std::string::npos);
#else
    CHECK(isa.find("avx512f") == std::string::npos);
#endif
    const std::int64_t native = f.attr_int("/", "native");
    CHECK((native == 0 || native == 1));
    const bool march =
        f.attr_string("/", "compile_flags").find("-march=native") != std::string::npos;
    CHECK(march == (native == 1));
    CHECK(f.attr_string("/", "eigen_simd").size() > 0);
  }
}

TEST_CASE("train records the share of samples whose subtractive inhibition is silent") {
  const auto dir = test::scratch_dir("silent_inhibition");
  // I's set point decides: far above every mean drive (100), I is silent for every sample (its
  // drive never reaches the set point); at 0 (the default) the drive of the freshly initialised
  // network is positive (non-negative weights and images, zero bias), and one epoch of the
  // implicit rule keeps it so: I is never silent.
  const std::pair<const char*, double> cases[] = {{"100", 1.0}, {"0", 0.0}};
  for (const auto& [setpoint, want] : cases) {
    CAPTURE(setpoint);
    const std::string run = (dir / (std::string("run") + setpoint + ".h5")).string();
    // Without centring the tiny network may stay at chance: the run is then marked failed, but
    // its file keeps the epoch's records.
    try {
      experiments::run_train(
          tiny({"train.epochs=1",
                std::string("network.circuit.populations.I.setpoint=") + setpoint}),
          quiet(run));
    } catch (const eisim::run_failed&) {
    }
    const auto f = io::H5File::open_read(run);
    const Mat<double> s = f.read_matrix("train/silent_inhibition_samples");
    const Mat<double> u = f.read_matrix("train/silent_inhibition_units");
    REQUIRE(s.rows() == 1);
    REQUIRE(s.cols() == 2);  // two hidden layers
    CHECK(s(0, 0) == want);
    CHECK(u(0, 0) == want);  // one I unit: the unit share is the sample share
  }
  // A layer without subtractive inhibition records NaN.
  const std::string ln = (dir / "layernorm.h5").string();
  experiments::run_train(tiny({"train.epochs=1", "network.kind=layernorm"}), quiet(ln));
  const Mat<double> s = io::H5File::open_read(ln).read_matrix("train/silent_inhibition_samples");
  REQUIRE(s.size() == 2);
  CHECK(std::isnan(s(0, 0)));
  CHECK(std::isnan(s(0, 1)));
}
