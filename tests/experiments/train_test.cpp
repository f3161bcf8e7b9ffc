#include <doctest/doctest.h>

#include <filesystem>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/config.hpp"
#include "eisim/models/error.hpp"
#include "test_support.hpp"

using namespace eisim;

namespace {

io::Config tiny(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> ov{"train.epochs=2"};
  ov.insert(ov.end(), extra.begin(), extra.end());
  return io::load_config(test::source_path("tests/data/tiny.yaml"), ov);
}

models::Network<double> weights_of(const std::string& path, const io::Config& c) {
  auto net = models::initialise<double>(io::network_spec(c), 999);  // overwritten below
  const auto f = io::H5File::open_read(path);
  experiments::load_network(f, net);
  return net;
}

experiments::TrainOptions quiet(const std::string& out, bool resume = false) {
  experiments::TrainOptions o;
  o.out = out;
  o.resume = resume;
  o.quiet = true;
  o.command = "test";
  return o;
}

}  // namespace

TEST_CASE("two epochs in one run equal one epoch, a resume, and one more epoch") {
  for (const char* rule : {"implicit", "frozen"}) {
    CAPTURE(rule);
    const auto dir = test::scratch_dir(std::string("resume_") + rule);
    const std::string set = std::string("learning.rule=") + rule;
    const std::string a = (dir / "a.h5").string(), b = (dir / "b.h5").string();
    experiments::run_train(tiny({set, "train.epochs=2"}), quiet(a));
    experiments::run_train(tiny({set, "train.epochs=1"}), quiet(b));
    experiments::run_train(tiny({set, "train.epochs=2"}), quiet(b, true));
    const auto wa = weights_of(a, tiny()), wb = weights_of(b, tiny());
    double worst = 0;
    for (std::size_t l = 0; l < wa.layers.size(); ++l) {
      std::vector<const Mat<double>*> ma, mb;
      wa.layers[l].w.for_each([&](const std::string&, const Mat<double>& m) { ma.push_back(&m); });
      wb.layers[l].w.for_each([&](const std::string&, const Mat<double>& m) { mb.push_back(&m); });
      REQUIRE(ma.size() == mb.size());
      for (std::size_t k = 0; k < ma.size(); ++k)
        worst = std::max(worst, (*ma[k] - *mb[k]).cwiseAbs().maxCoeff());
    }
    CHECK(worst <= 1e-6);
    const auto fa = io::H5File::open_read(a), fb = io::H5File::open_read(b);
    CHECK(fa.read_vector("train/loss") == fb.read_vector("train/loss"));
    CHECK(fb.attr_string("/", "status") == "complete");
  }
}

TEST_CASE("a NaN loss stops training with a hint and leaves the last good file intact") {
  const auto dir = test::scratch_dir("nan");
  const std::string out = (dir / "run.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(out));
  const auto before = std::filesystem::last_write_time(out);
  CHECK_THROWS_WITH_AS(
      experiments::run_train(tiny({"train.epochs=3", "learning.lr_E=1e30"}), quiet(out)),
      doctest::Contains("try a smaller learning rate"), eisim::numerical_error);
  CHECK(std::filesystem::last_write_time(out) == before);
  const auto f = io::H5File::open_read(out);
  CHECK(f.read_vector("train/epoch").size() == 1);
  CHECK(f.attr_string("/", "status") == "complete");
}

TEST_CASE("a missing dataset names the path and the Debian package") {
  const auto dir = test::scratch_dir("missing");
  CHECK_THROWS_WITH_AS(experiments::run_train(tiny({"data.dir=/nonexistent/fashion"}),
                                              quiet((dir / "x.h5").string())),
                       doctest::Contains("dataset-fashion-mnist"), eisim::data_error);
  CHECK_FALSE(std::filesystem::exists(dir / "x.h5"));
}

TEST_CASE("resuming with a different configuration is refused") {
  const auto dir = test::scratch_dir("resume_mismatch");
  const std::string out = (dir / "run.h5").string();
  experiments::run_train(tiny({"train.epochs=1"}), quiet(out));
  CHECK_THROWS_WITH_AS(
      experiments::run_train(tiny({"train.epochs=2", "learning.lr_E=0.5"}), quiet(out, true)),
      doctest::Contains("cannot resume"), eisim::config_error);
}

TEST_CASE("a training file records history, weights, provenance and equilibrium traces") {
  const auto dir = test::scratch_dir("record");
  const std::string out = (dir / "run.h5").string();
  const auto s = experiments::run_train(tiny(), quiet(out));
  CHECK(s.epochs == 2);
  CHECK(s.final_accuracy > 0.3);  // 10 classes: far above chance after 2 tiny epochs
  const auto f = io::H5File::open_read(out);
  for (const char* d : {"train/loss", "train/test_accuracy", "train/grad_alignment",
                        "train/activity_mean", "train/iterations_histogram", "weights/layer_0/W_EX",
                        "simulate/layer_0/v", "simulate/layer_1/v_eq", "checkpoint/rng"})
    CHECK_MESSAGE(f.exists(d), d);
  CHECK(f.attr_string("/", "git_commit").size() > 0);
  CHECK(f.attr_string("/", "config").find("rule: implicit") != std::string::npos);
  // The implicit rule's gradient is the exact one: alignment 1.
  for (double a : f.read_vector("train/grad_alignment_total")) CHECK(a == doctest::Approx(1.0));
}

TEST_CASE("an interrupted sweep completes only its missing points and merges one row each") {
  const auto dir = test::scratch_dir("sweep");
  const std::string cfg = test::source_path("tests/data/tiny.yaml");
  experiments::SweepOptions o;
  o.config_path = cfg;
  o.overrides = {"sweep.out_dir=" + (dir / "runs").string(), "train.epochs=1",
                 "simulate.images=[0]"};
  o.task_id = 1;  // one grid point done before the "interruption"
  CHECK(experiments::run_sweep(o) == 0);
  const auto p1 = dir / "runs" / "implicit_eps0.5_seed2.h5";
  REQUIRE(std::filesystem::exists(p1));
  const auto t1 = std::filesystem::last_write_time(p1);
  o.task_id = -1;
  o.local = true;
  o.merge = true;
  o.merged_path = (dir / "summary.h5").string();
  CHECK(experiments::run_sweep(o) == 0);
  CHECK(std::filesystem::last_write_time(p1) == t1);  // not re-run
  const auto f = io::H5File::open_read(o.merged_path);
  const auto runs = f.read_strings("summary/run");
  CHECK(runs.size() == 4);
  CHECK(f.read_vector("summary/final_accuracy").size() == 4);
  CHECK(f.exists("runs/frozen_eps0.5_seed1/train/loss"));
  CHECK(std::filesystem::exists(dir / "summary.csv"));
}

TEST_CASE("a task id outside the grid is a config error naming the grid size") {
  experiments::SweepOptions o;
  o.config_path = test::source_path("tests/data/tiny.yaml");
  o.task_id = 99;
  CHECK_THROWS_WITH_AS(experiments::run_sweep(o), doctest::Contains("4 points"),
                       eisim::config_error);
}
