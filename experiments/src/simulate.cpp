#include <cmath>
#include <cstdio>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/output.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/learning/gradients.hpp"
#include "eisim/models/error.hpp"
#include "eisim/models/nonlinearity.hpp"
#include "progress.hpp"
#include "simulation.hpp"

namespace eisim::experiments {

namespace {

std::vector<std::string> statuses(const sim::SolveResult& r) {
  std::vector<std::string> out;
  for (auto s : r.sample_status) out.push_back(sim::to_string(s));
  return out;
}

// (T, N, n) tensor from per-time (n x N) snapshots.
std::vector<float> stack(const std::vector<Mat<double>>& snaps) {
  std::vector<float> out;
  for (const auto& m : snaps)
    for (int j = 0; j < m.cols(); ++j)
      for (int i = 0; i < m.rows(); ++i) out.push_back(float(m(i, j)));
  return out;
}

}  // namespace

int write_simulation(io::H5File& f, const io::Config& config, const models::Network<double>& net,
                     const io::Dataset& test, bool progress) {
  const auto& sc = config.simulate;
  const int N = int(sc.images.size());
  Mat<double> x(test.images.rows(), N);
  std::vector<std::int64_t> idx, labels;
  for (int j = 0; j < N; ++j) {
    const int i = sc.images[j];
    if (i < 0 || i >= test.size())
      throw config_error("simulate.images", "image index " + std::to_string(i) +
                                                " is outside the test set (0.." +
                                                std::to_string(test.size() - 1) + ")");
    x.col(j) = test.images.col(i).cast<double>();
    idx.push_back(i);
    labels.push_back(test.labels[i]);
  }
  std::mt19937_64 rng(config.data.test_seed + 7777);
  io::apply_jitter<double>(x, sc.eps, rng);
  f.write("simulate/images", idx);
  f.write("simulate/labels", labels);
  f.write_scalar("simulate/eps", sc.eps);
  std::vector<double> times(sc.record_points);
  for (int k = 0; k < sc.record_points; ++k) times[k] = sc.t_max * k / (sc.record_points - 1);
  f.write("simulate/t", times);

  int failures = 0;
  Progress bar(progress);
  Mat<double> in = x, e, r;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const auto& layer = net.layers[l];
    const std::string g = "simulate/layer_" + std::to_string(l);
    // Equilibrium of this layer alone (the network's forward pass for one layer).
    models::Network<double> one;
    one.layers = {layer};
    learning::ForwardCache<double> cache;
    learning::forward(one, in, config.fixed_point, cache);
    const auto& c = cache.layers[0];
    f.write(g + "/v_eq", Mat<double>(c.z.v.transpose()));
    std::vector<double> mean(N), var(N);
    for (int j = 0; j < N; ++j) {
      mean[j] = c.z.v.col(j).mean();
      var[j] = (c.z.v.col(j).array() - mean[j]).square().mean();
    }
    f.write(g + "/eq_mean", mean);
    f.write(g + "/eq_var", var);
    f.set_attr(g, "kind", models::to_string(layer.spec.kind));
    f.set_attr(g, "n_E", std::int64_t(layer.spec.n_E));
    if (layer.spec.kind == models::LayerKind::circuit) {
      f.write(g + "/r_I_eq", Mat<double>(c.z.r_I.transpose()));
      f.write(g + "/r_D_eq", Mat<double>(c.z.r_D.transpose()));
      std::vector<std::int64_t> its(c.solve.sample_iterations.begin(),
                                    c.solve.sample_iterations.end());
      f.write(g + "/fp_iterations", its);
      f.write(g + "/fp_residual", c.solve.sample_residual);
      f.write(g + "/fp_status", statuses(c.solve));
      failures += c.solve.failed_samples;
      // ODE traces from the solvers' common initial state.
      std::vector<Mat<double>> tv, ti, td;
      sim::CircuitState<double> z;
      sim::initial_state(layer, N, z);
      const auto ores = sim::integrate<double>(
          layer, c.e, in, config.ode, z, times, [&](double t, const sim::CircuitState<double>& s) {
            tv.push_back(s.v);
            ti.push_back(s.r_I);
            td.push_back(s.r_D);
            bar.update("simulate layer " + std::to_string(l), long(tv.size()), long(times.size()),
                       "t = " + std::to_string(int(t)) + " ms");
          });
      const std::size_t T = tv.size();
      f.write_tensor(g + "/v", stack(tv), {T, std::size_t(N), std::size_t(layer.spec.n_E)});
      f.write_tensor(g + "/r_I", stack(ti),
                     {T, std::size_t(N), std::size_t(layer.spec.circuit.n_I)});
      f.write_tensor(g + "/r_D", stack(td),
                     {T, std::size_t(N), std::size_t(layer.spec.circuit.n_D)});
      f.write_scalar(g + "/ode_steps", ores.iterations);
      f.write(g + "/ode_residual", ores.sample_residual);
      f.write(g + "/ode_status", statuses(ores));
      const double diff = (z.v - c.z.v).cwiseAbs().maxCoeff();
      f.write_scalar(g + "/ode_fp_max_abs_diff", diff);
      failures += ores.failed_samples;
      if (!ores.ok() || !c.solve.ok())
        std::fprintf(stderr, "warning: layer %zu: fixed point %s; ODE %s\n", l,
                     c.solve.describe().c_str(), ores.describe().c_str());
    }
    models::apply_phi(layer.spec.phi, c.z.v, r);
    in = r;
  }
  f.write("simulate/logits", Mat<double>(in.transpose()));
  f.set_attr("simulate", "failed_samples", std::int64_t(failures));
  return failures;
}

void run_simulate(const io::Config& config, const std::string& out_path, const std::string& command,
                  bool overwrite) {
  const std::string out = io::resolve_output(out_path);
  if (!config.simulate.weights.empty() && io::same_file(out, config.simulate.weights))
    throw config_error("simulate.weights", "the output --out " + out + " is the weights file " +
                                               config.simulate.weights +
                                               " that simulate reads; choose another --out");
  io::check_output_path(out, overwrite, "--out");
  const io::OutputLock lock(out, "--out " + out);
  io::check_output_path(out, overwrite, "--out");  // again under the lock
  std::fprintf(stderr, "%s", io::provenance_header(config, command).c_str());
  const io::Dataset test = io::load_fashion_mnist(config.data.dir, false);
  auto net = models::initialise<double>(io::network_spec(config), config.seed);
  if (!config.simulate.weights.empty()) {
    // A run file of eisim train is verified like a checkpoint (checksum, shapes, finite values).
    const io::H5File wf = io::H5File::open_read(config.simulate.weights, /*require_checksum=*/true);
    verify_run_file(wf);
    // The weights belong to the network the run trained: every network key and the precision
    // must be the run's (a shape check alone would accept another circuit of the same size).
    const io::Config trained = io::parse_config(wf.attr_string("/", "config"), {},
                                                config.simulate.weights + " (stored config)");
    std::vector<std::string> diff;
    for (const auto& d : io::config_differences(trained, config))
      if (d.rfind("network.", 0) == 0 || d.rfind("precision ", 0) == 0) diff.push_back(d);
    if (!diff.empty()) {
      std::string keys;
      for (const auto& d : diff) keys += "\n  " + d;
      throw config_error(diff.front().substr(0, diff.front().find(' ')),
                         "simulate.weights = " + config.simulate.weights +
                             " was trained with another network (trained vs this config):" + keys +
                             "\nuse the run's network and precision keys");
    }
    if (wf.attr_string("/", "status") == "failed")
      std::fprintf(stderr, "warning: %s is a run marked failed: %s\n",
                   config.simulate.weights.c_str(), wf.attr_string("/", "failure").c_str());
    load_network(wf, net);
  }
  int failures = 0;
  io::write_atomically(out, [&](io::H5File& f) {
    io::write_provenance(f, config, command);
    failures = write_simulation(f, config, net, test, config.train.progress);
  });
  std::fprintf(stderr, "wrote %s (%zu images, %zu layers%s)\n", out.c_str(),
               config.simulate.images.size(), net.layers.size(),
               failures ? ", SOME SOLVES DID NOT CONVERGE: see */fp_status, */ode_status" : "");
}

}  // namespace eisim::experiments
